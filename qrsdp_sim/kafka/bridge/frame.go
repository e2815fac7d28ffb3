package main

// Framing between Python and the bridge (both directions, little-endian):
//
//	frame = type u8 | payload length u32 | payload
//
//	'R' run of event records:
//	    partition i32 | first_offset i64 | first_seq u64 | count u32 |
//	    key (u16 len + bytes) | date (u16 len + bytes) | run_id (u16 len + bytes) |
//	    count x 26 bytes of record values, back to back
//	'M' one raw Kafka message:
//	    partition i32 | offset i64 | key (i32 len, -1 = null, + bytes) |
//	    value (i32 len, -1 = null, + bytes) | header count u16 |
//	    per header: name (u16 len + bytes) | value (i32 len, -1 = null, + bytes)
//	'J' one JSON object (commands from Python, events from the bridge)
//
// See docs/kafka-bridge.md.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	FrameRun     byte = 'R'
	FrameMessage byte = 'M'
	FrameJSON    byte = 'J'

	// RecordSize is the size of one QRSDP event record (qrsdp_sim/records.py RECORD_DTYPE).
	RecordSize = 26
	// FrameHeaderSize is type u8 + payload length u32.
	FrameHeaderSize = 5
	// runFixedSize is partition + first_offset + first_seq + count.
	runFixedSize = 4 + 8 + 8 + 4
	// MaxPayload bounds a frame's payload (a sanity check against a corrupt stream).
	MaxPayload = 1 << 30
)

// Run is a contiguous run of one session's event records.
type Run struct {
	Partition   int32
	FirstOffset int64
	FirstSeq    uint64
	Count       uint32
	Key         []byte
	Date        []byte
	RunID       []byte
	Values      []byte // Count * RecordSize bytes
}

// Value is the i-th record of the run (a sub-slice of Values).
func (r *Run) Value(i int) []byte {
	return r.Values[i*RecordSize : (i+1)*RecordSize : (i+1)*RecordSize]
}

// Message is one raw Kafka message (anything that is not part of a run).
type Message struct {
	Partition int32
	Offset    int64
	Key       []byte // nil = null
	Value     []byte // nil = null
	Headers   []kgo.RecordHeader
}

var errShort = errors.New("frame payload too short")

// ReadFrame reads one frame. The payload is a freshly allocated slice that the caller may keep.
// io.EOF is returned only at a frame boundary; a stream cut inside a frame gives io.ErrUnexpectedEOF.
func ReadFrame(r *bufio.Reader) (byte, []byte, error) {
	var hdr [FrameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("frame type %q: payload of %d bytes exceeds %d", hdr[0], n, MaxPayload)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], payload, nil
}

// AppendFrameHeader appends type + payload length.
func AppendFrameHeader(dst []byte, typ byte, payloadLen int) []byte {
	dst = append(dst, typ)
	return binary.LittleEndian.AppendUint32(dst, uint32(payloadLen))
}

// AppendJSONFrame appends a 'J' frame holding the given JSON document.
func AppendJSONFrame(dst []byte, doc []byte) []byte {
	dst = AppendFrameHeader(dst, FrameJSON, len(doc))
	return append(dst, doc...)
}

func appendShort(dst, b []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}

func appendLong(dst, b []byte) []byte {
	if b == nil {
		return binary.LittleEndian.AppendUint32(dst, math.MaxUint32) // -1: null
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// RunHeaderSize is the payload size of a run without its values.
func RunHeaderSize(key, date, runID []byte) int {
	return runFixedSize + 6 + len(key) + len(date) + len(runID)
}

// AppendRunHeader appends the frame header and the run's fields; count*26 value bytes must follow.
func AppendRunHeader(dst []byte, partition int32, firstOffset int64, firstSeq uint64, count uint32,
	key, date, runID []byte) []byte {
	dst = AppendFrameHeader(dst, FrameRun, RunHeaderSize(key, date, runID)+int(count)*RecordSize)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(partition))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(firstOffset))
	dst = binary.LittleEndian.AppendUint64(dst, firstSeq)
	dst = binary.LittleEndian.AppendUint32(dst, count)
	dst = appendShort(dst, key)
	dst = appendShort(dst, date)
	return appendShort(dst, runID)
}

// AppendRun appends a whole 'R' frame.
func AppendRun(dst []byte, r *Run) []byte {
	dst = AppendRunHeader(dst, r.Partition, r.FirstOffset, r.FirstSeq, r.Count, r.Key, r.Date, r.RunID)
	return append(dst, r.Values...)
}

// AppendMessage appends a whole 'M' frame.
func AppendMessage(dst []byte, m *Message) []byte {
	size := 4 + 8 + 4 + len(m.Key) + 4 + len(m.Value) + 2
	for _, h := range m.Headers {
		size += 2 + len(h.Key) + 4 + len(h.Value)
	}
	dst = AppendFrameHeader(dst, FrameMessage, size)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(m.Partition))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(m.Offset))
	dst = appendLong(dst, m.Key)
	dst = appendLong(dst, m.Value)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(m.Headers)))
	for _, h := range m.Headers {
		dst = appendShort(dst, []byte(h.Key))
		dst = appendLong(dst, h.Value)
	}
	return dst
}

// reader walks a payload; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShort
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u16() uint16 {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) u32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *reader) u64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

func (r *reader) short() []byte { return r.take(int(r.u16())) }

func (r *reader) long() []byte {
	n := int32(r.u32())
	if r.err != nil {
		return nil
	}
	if n == -1 {
		return nil
	}
	if n < -1 {
		r.err = fmt.Errorf("negative length %d", n)
		return nil
	}
	b := r.take(int(n))
	if b == nil && r.err == nil {
		return []byte{}
	}
	return b
}

// DecodeRun parses an 'R' payload. The slices alias the payload.
func DecodeRun(p []byte) (Run, error) {
	r := reader{b: p}
	run := Run{
		Partition:   int32(r.u32()),
		FirstOffset: int64(r.u64()),
		FirstSeq:    r.u64(),
		Count:       r.u32(),
	}
	run.Key = r.short()
	run.Date = r.short()
	run.RunID = r.short()
	if r.err != nil {
		return Run{}, fmt.Errorf("run frame: %w", r.err)
	}
	if uint64(len(r.b)) != uint64(run.Count)*RecordSize {
		return Run{}, fmt.Errorf("run frame: %d value bytes for %d records of %d bytes", len(r.b), run.Count, RecordSize)
	}
	run.Values = r.b
	return run, nil
}

// DecodeMessage parses an 'M' payload. The slices alias the payload.
func DecodeMessage(p []byte) (Message, error) {
	r := reader{b: p}
	m := Message{Partition: int32(r.u32()), Offset: int64(r.u64())}
	m.Key = r.long()
	m.Value = r.long()
	n := int(r.u16())
	if r.err == nil && n > 0 {
		m.Headers = make([]kgo.RecordHeader, n)
		for i := range m.Headers {
			m.Headers[i].Key = string(r.short())
			m.Headers[i].Value = r.long()
		}
	}
	if r.err != nil {
		return Message{}, fmt.Errorf("message frame: %w", r.err)
	}
	if len(r.b) != 0 {
		return Message{}, fmt.Errorf("message frame: %d trailing bytes", len(r.b))
	}
	return m, nil
}
