package main

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// appendVarBytes appends a varint length (-1 for nil) and the bytes.
func appendVarBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// v2Batch encodes records (offsets base, base+1, ...) as one v2 record batch, lz4-compressed when
// asked; control marks it a transaction marker batch.
func v2Batch(t *testing.T, base int64, recs []*kgo.Record, lz4, control bool) []byte {
	t.Helper()
	var body []byte
	for i, r := range recs {
		var rec []byte
		rec = append(rec, 0)                     // attributes
		rec = binary.AppendVarint(rec, 0)        // timestamp delta
		rec = binary.AppendVarint(rec, int64(i)) // offset delta
		rec = appendVarBytes(rec, r.Key)
		rec = appendVarBytes(rec, r.Value)
		rec = binary.AppendVarint(rec, int64(len(r.Headers)))
		for _, h := range r.Headers {
			rec = appendVarBytes(rec, []byte(h.Key))
			rec = appendVarBytes(rec, h.Value)
		}
		body = binary.AppendVarint(body, int64(len(rec)))
		body = append(body, rec...)
	}
	attrs := uint16(0)
	if lz4 {
		comp, err := kgo.DefaultCompressor(kgo.Lz4Compression())
		if err != nil {
			t.Fatal(err)
		}
		out, codec := comp.Compress(new(bytes.Buffer), body)
		if codec != kgo.CodecLz4 {
			t.Fatalf("codec %v", codec)
		}
		body = append([]byte{}, out...)
		attrs |= 3
	}
	if control {
		attrs |= 0x20
	}
	be := binary.BigEndian
	h := make([]byte, batchHeaderSize)
	be.PutUint64(h[0:], uint64(base))
	be.PutUint32(h[8:], uint32(batchHeaderSize-12+len(body)))
	h[16] = 2
	be.PutUint16(h[21:], attrs)
	be.PutUint32(h[23:], uint32(len(recs)-1))
	be.PutUint64(h[43:], ^uint64(0)) // producer id -1
	be.PutUint32(h[57:], uint32(len(recs)))
	batch := append(h, body...)
	be.PutUint32(batch[17:], crc32.Checksum(batch[21:], castagnoli))
	return batch
}

func rawFrames(t *testing.T, data []byte, pos int64, maxRun int) ([]byte, int64, error) {
	t.Helper()
	f := newRawFetcher(&consumer{cfg: consumerConfig{maxRun: maxRun}})
	next, err := f.batches(0, pos, data)
	return f.out, next, err
}

// The raw walker writes the frames franz-go's path writes for the same records -- across batch
// boundaries, compressed or not -- skips records before the position and control batches, and
// leaves a batch cut off at the end of the response for the next fetch.
func TestRawBatchesMatchAppendRecords(t *testing.T) {
	eos := &kgo.Record{Key: []byte("A"), Value: []byte{}, Headers: []kgo.RecordHeader{
		{Key: "date", Value: []byte("d1")}, {Key: "seq", Value: make([]byte, 8)}, {Key: "null", Value: nil}}}
	noKey := event(0, 0, "A", "d1", "r", 9)
	noKey.Key = nil
	emptyKey := event(0, 0, "", "d1", "r", 10)
	var recs []*kgo.Record
	for s := range uint64(5) {
		recs = append(recs, event(0, 0, "A", "d1", "r", s))
	}
	recs = append(recs, eos, noKey, emptyKey)
	for s := uint64(20); s < 30; s++ {
		recs = append(recs, event(0, 0, "B", "d1", "r", s))
	}
	// batches: [0..2] plain, [3..9] lz4, a control batch at 10, [11..17] plain, then a cut-off batch
	var data []byte
	data = append(data, v2Batch(t, 0, recs[0:3], false, false)...)
	data = append(data, v2Batch(t, 3, recs[3:10], true, false)...)
	data = append(data, v2Batch(t, 10, recs[10:11], false, true)...)
	data = append(data, v2Batch(t, 11, recs[11:18], false, false)...)
	tail := v2Batch(t, 18, recs[:2], false, false)
	data = append(data, tail[:len(tail)-5]...)

	var want []*kgo.Record // what a consumer from offset 1 sees: offsets 1..9 and 11..17
	for i, r := range recs[:18] {
		if i == 0 || i == 10 {
			continue
		}
		c := *r
		c.Partition, c.Offset = 0, int64(i)
		want = append(want, &c)
	}
	wantStream, _, _ := appendRecords(nil, want, 4)
	got, next, err := rawFrames(t, data, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if next != 18 {
		t.Fatalf("next offset %d, want 18 (the cut-off batch is fetched again)", next)
	}
	// franz-go's path splits runs where a poll ends; over one poll both must agree exactly
	if !bytes.Equal(got, wantStream) {
		t.Fatalf("frames differ:\n got %v\nwant %v", spansOf(t, got), spansOf(t, wantStream))
	}
}

func spansOf(t *testing.T, stream []byte) []string {
	types, payloads := readAll(t, stream)
	var out []string
	for i, p := range payloads {
		if types[i] == FrameRun {
			r, _ := DecodeRun(p)
			out = append(out, "R"+string(r.Key)+string(rune('0'+r.Count)))
		} else {
			m, _ := DecodeMessage(p)
			out = append(out, "M"+string(m.Key))
		}
	}
	return out
}

func TestRawBatchesRefuseCorruptBatches(t *testing.T) {
	good := v2Batch(t, 0, []*kgo.Record{event(0, 0, "A", "d", "r", 0)}, false, false)
	bad := append([]byte{}, good...)
	bad[len(bad)-1] ^= 0xFF
	if _, next, err := rawFrames(t, bad, 0, 10); err == nil || !strings.Contains(err.Error(), "CRC") || next != 0 {
		t.Fatalf("corrupt batch: next %d, err %v", next, err)
	}
	old := append([]byte{}, good...)
	old[16] = 1
	if _, _, err := rawFrames(t, old, 0, 10); err == nil || !strings.Contains(err.Error(), "format v1") {
		t.Fatalf("v1 batch: %v", err)
	}
	// a record length past the batch end (CRC recomputed: the broker would have refused it)
	short := append([]byte{}, good...)
	short[batchHeaderSize] = 0x7E
	binary.BigEndian.PutUint32(short[17:], crc32.Checksum(short[21:], castagnoli))
	if _, _, err := rawFrames(t, short, 0, 10); err == nil {
		t.Fatal("a record running past its batch was accepted")
	}
}
