package main

// Raw fetch: assign mode's fetch path (the ITCH streamer's). The bridge sends Kafka Fetch requests
// itself and walks the v2 record batches of the response in place, writing each record's value
// straight into a run frame: no kgo.Record, no header strings and no garbage per record. franz-go's
// consumer decoded every record into a struct with four header strings (~0.75 µs per record, half
// of it allocation and garbage collection: the streamer's Kafka client cost more CPU than the whole
// rest of the feed); this path costs ~0.1-0.2 µs. The frames are byte for byte those of the
// franz-go path (appendRecords), which `--raw-fetch=false` still selects. franz-go's client is kept
// for everything else (connections, metadata, offsets, commits, decompression).
//
// Errors: a partition whose offset fell out of the log is moved to the earliest (or latest,
// --reset) offset with an error event; any other failure (broker gone, leader moved, topic being
// re-created) refreshes the metadata and retries after a back-off, reporting the error (rate
// limited) -- the loop never exits on its own.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	batchHeaderSize = 61      // v2 record batch header, up to and including the record count
	rawFlushBytes   = 4 << 20 // frames written out once a response has produced this much
	rawBackoffMax   = time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// rawHeader is one record header: slices into the fetched (or decompressed) batch.
type rawHeader struct {
	key, value []byte
	null       bool
}

// rawRun is the run frame being written: its header sits at out[hdrPos:], its count and payload
// length are patched in when it closes.
type rawRun struct {
	open             bool
	hdrPos           int
	partition        int32
	first            int64
	seq              uint64
	n                int
	key, date, runID []byte // copies
}

type rawFetcher struct {
	c        *consumer
	pos      map[int32]int64 // next offset per assigned partition
	leader   map[int32]int32
	topicID  [16]byte
	haveMeta bool
	dec      kgo.Decompressor
	pools    *fetchPools
	out      []byte
	hdrs     []rawHeader
	run      rawRun
	backoff  time.Duration
	consumed int64
}

func newRawFetcher(c *consumer) *rawFetcher {
	pools := &fetchPools{}
	return &rawFetcher{c: c, pos: map[int32]int64{}, leader: map[int32]int32{}, pools: pools,
		dec: kgo.DefaultDecompressor(pools)}
}

// rawFetchLoop replaces fetchLoop in assign mode (unless --raw-fetch=false).
func (c *consumer) rawFetchLoop() {
	f := newRawFetcher(c)
	for {
		ctx, cancel, stop := c.nextRound(f.assign)
		if stop {
			return
		}
		var err error
		if len(f.pos) == 0 {
			select {
			case <-ctx.Done():
			case <-c.stopCh:
			case <-time.After(100 * time.Millisecond):
			}
		} else {
			err = f.fetch(ctx)
		}
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) && !c.stopping.Load() {
			c.reportFetchError(fmt.Sprintf("fetch %s: %v", c.cfg.topic, err))
			f.backoff = min(max(2*f.backoff, 50*time.Millisecond), rawBackoffMax)
			select {
			case <-c.stopCh:
			case <-time.After(f.backoff):
			}
		} else if err == nil {
			f.backoff = 0
		}
		if c.out.failed() != nil { // Python is gone
			c.requestStop()
		}
	}
}

// assign replaces the assignment; -2 / -1 are resolved to the log's start / end now.
func (f *rawFetcher) assign(cmd *command) {
	c := f.c
	pos := make(map[int32]int64, len(cmd.Partitions))
	var bad []string
	for _, p := range cmd.Partitions {
		o := p.Offset
		_, err := startOffset(o) // the same rule and message as franz-go's path
		if err == nil && o < 0 {
			o, err = f.listOffset(p.Partition, o == -2)
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("partition %d: %v", p.Partition, err))
			continue
		}
		pos[p.Partition] = o
	}
	if len(bad) > 0 {
		c.out.event(map[string]any{"event": "assigned", "id": idOf(cmd), "error": strings.Join(bad, "; ")})
		return
	}
	f.pos = pos
	parts := make([]int32, 0, len(pos))
	for p := range pos {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	c.current = parts
	c.out.event(map[string]any{"event": "assigned", "id": idOf(cmd), "partitions": append([]int32{}, parts...),
		"offsets": cmd.Partitions, "error": nil})
}

// listOffset is a partition's log start (earliest) or end offset.
func (f *rawFetcher) listOffset(p int32, earliest bool) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(f.c.cfg.requestTimeoutMs)*time.Millisecond)
	defer cancel()
	list := f.c.adm.ListEndOffsets
	if earliest {
		list = f.c.adm.ListStartOffsets
	}
	got, err := list(ctx, f.c.cfg.topic)
	if err != nil {
		return 0, err
	}
	o, ok := got.Lookup(f.c.cfg.topic, p)
	if !ok {
		return 0, fmt.Errorf("topic %s has no partition %d", f.c.cfg.topic, p)
	}
	if o.Err != nil {
		return 0, o.Err
	}
	return o.Offset, nil
}

func (f *rawFetcher) refreshMeta(ctx context.Context) error {
	md, err := f.c.adm.Metadata(ctx, f.c.cfg.topic)
	if err != nil {
		return err
	}
	t, ok := md.Topics[f.c.cfg.topic]
	if !ok {
		return fmt.Errorf("topic %s not in the metadata", f.c.cfg.topic)
	}
	if t.Err != nil {
		return t.Err
	}
	f.topicID = t.ID
	clear(f.leader)
	for p, d := range t.Partitions {
		if d.Err == nil && d.Leader >= 0 {
			f.leader[p] = d.Leader
		}
	}
	f.haveMeta = true
	return nil
}

type rawResponse struct {
	resp *kmsg.FetchResponse
	err  error
}

// fetch sends one Fetch request to the leader of each assigned partition (concurrently) and
// writes the frames of what came back, partitions in order.
func (f *rawFetcher) fetch(ctx context.Context) error {
	if !f.haveMeta {
		if err := f.refreshMeta(ctx); err != nil {
			return err
		}
	}
	byLeader := map[int32][]int32{}
	for p := range f.pos {
		l, ok := f.leader[p]
		if !ok {
			f.haveMeta = false
			return fmt.Errorf("partition %d has no leader", p)
		}
		byLeader[l] = append(byLeader[l], p)
	}
	leaders := make([]int32, 0, len(byLeader))
	for l := range byLeader {
		leaders = append(leaders, l)
	}
	sort.Slice(leaders, func(i, j int) bool { return leaders[i] < leaders[j] })
	results := make([]rawResponse, len(leaders))
	var wg sync.WaitGroup
	for i, l := range leaders {
		parts := byLeader[l]
		sort.Slice(parts, func(a, b int) bool { return parts[a] < parts[b] })
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis = int32(f.c.cfg.fetchMaxWaitMs)
		req.MinBytes = 1
		req.MaxBytes = int32(f.c.cfg.fetchMaxBytes)
		req.SessionEpoch = -1 // no fetch session: every request names its partitions
		t := kmsg.NewFetchRequestTopic()
		t.Topic = f.c.cfg.topic
		t.TopicID = f.topicID
		for _, p := range parts {
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition = p
			rp.FetchOffset = f.pos[p]
			rp.PartitionMaxBytes = int32(f.c.cfg.fetchMaxPartBytes)
			t.Partitions = append(t.Partitions, rp)
		}
		req.Topics = append(req.Topics, t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := f.c.cl.Broker(int(l)).Request(ctx, req)
			if err == nil {
				results[i].resp = resp.(*kmsg.FetchResponse)
			}
			results[i].err = err
		}()
	}
	wg.Wait()
	var firstErr error
	for _, r := range results {
		if r.err == nil {
			r.err = kerr.ErrorForCode(r.resp.ErrorCode)
		}
		if r.err != nil {
			f.haveMeta = false
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		for i := range r.resp.Topics {
			for j := range r.resp.Topics[i].Partitions {
				if err := f.partition(ctx, &r.resp.Topics[i].Partitions[j]); err != nil && firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	f.emit()
	return firstErr
}

// partition handles one partition of a fetch response.
func (f *rawFetcher) partition(_ context.Context, rp *kmsg.FetchResponseTopicPartition) error {
	p := rp.Partition
	pos, ok := f.pos[p]
	if !ok {
		return nil
	}
	if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
		if errors.Is(err, kerr.OffsetOutOfRange) {
			o, lerr := f.listOffset(p, f.c.cfg.reset == "earliest")
			if lerr != nil {
				return fmt.Errorf("partition %d: offset %d out of range, and listing offsets failed: %w", p, pos, lerr)
			}
			f.pos[p] = o
			f.c.out.event(errorEvent(fmt.Sprintf("fetch %s/%d: offset %d is out of range; resetting to %s offset %d",
				f.c.cfg.topic, p, pos, f.c.cfg.reset, o), false))
			return nil
		}
		f.haveMeta = false
		return fmt.Errorf("partition %d: %w", p, err)
	}
	next, err := f.batches(p, pos, rp.RecordBatches)
	f.pos[p] = next
	if err != nil {
		return fmt.Errorf("partition %d at offset %d: %w", p, next, err)
	}
	return nil
}

// batches walks the record batches of one partition from offset pos; returns the next offset.
// A batch cut off at the end of the response is fetched again next time.
func (f *rawFetcher) batches(p int32, pos int64, data []byte) (int64, error) {
	be := binary.BigEndian
	defer f.closeRun()
	for len(data) >= 12 {
		base := int64(be.Uint64(data))
		size := int(int32(be.Uint32(data[8:])))
		if size < 0 || 12+size > len(data) {
			break // partial batch
		}
		batch := data[:12+size]
		data = data[12+size:]
		if len(batch) < batchHeaderSize || batch[16] != 2 {
			if len(batch) > 16 {
				return pos, fmt.Errorf("record batch at offset %d has message format v%d (only v2 is read)", base, batch[16])
			}
			return pos, fmt.Errorf("record batch at offset %d is %d bytes", base, len(batch))
		}
		if crc32.Checksum(batch[21:], castagnoli) != be.Uint32(batch[17:]) {
			return pos, fmt.Errorf("record batch at offset %d fails its CRC", base)
		}
		attrs := be.Uint16(batch[21:])
		last := base + int64(int32(be.Uint32(batch[23:])))
		if last < pos {
			continue
		}
		if attrs&0x20 != 0 { // control batch (transaction marker)
			pos = last + 1
			continue
		}
		n := int(int32(be.Uint32(batch[57:])))
		recs := batch[batchHeaderSize:]
		codec := kgo.CompressionCodecType(attrs & 0x7)
		var pooled []byte
		if codec != kgo.CodecNone {
			var err error
			if recs, err = f.dec.Decompress(recs, codec); err != nil {
				return pos, fmt.Errorf("record batch at offset %d: %w", base, err)
			}
			pooled = recs
		}
		err := f.records(p, base, pos, n, recs)
		if pooled != nil { // the open run holds copies only: the decompressed buffer can go back
			f.pools.PutDecompressBytes(pooled)
		}
		if err != nil {
			return pos, fmt.Errorf("record batch at offset %d: %w", base, err)
		}
		pos = last + 1
		if len(f.out) >= rawFlushBytes {
			f.emit()
		}
	}
	return pos, nil
}

// records walks the n records of a batch, taking those at offset >= pos.
func (f *rawFetcher) records(p int32, base, pos int64, n int, b []byte) error {
	r := varReader{b: b}
	for i := 0; i < n; i++ {
		length := r.varint()
		if r.err != nil || length < 0 || int(length) > len(r.b) {
			return errors.New("record length runs past the batch")
		}
		rec := varReader{b: r.b[:length]}
		r.b = r.b[length:]
		rec.skip(1)  // attributes
		rec.varint() // timestamp delta
		delta := rec.varint()
		key := rec.bytes()
		value := rec.bytes()
		nh := int(rec.varint())
		if rec.err != nil || nh < 0 || nh > len(rec.b) {
			return errors.New("malformed record")
		}
		f.hdrs = f.hdrs[:0]
		for k := 0; k < nh; k++ {
			hk := rec.bytes()
			hv := rec.bytes()
			f.hdrs = append(f.hdrs, rawHeader{key: hk, value: hv, null: hv == nil})
		}
		if rec.err != nil {
			return errors.New("malformed record headers")
		}
		if off := base + delta; off >= pos {
			f.add(p, off, key, value)
			f.consumed++
		}
	}
	return nil
}

// rawFastShape is fastShape for a raw record: an event message in the producer's exact shape.
func rawFastShape(key, value []byte, h []rawHeader) (uint64, bool) {
	if len(value) != RecordSize || len(h) != 4 || key == nil || len(key) > 0xffff {
		return 0, false
	}
	if string(h[0].key) != hTsNs || len(h[0].value) != 8 || string(h[1].key) != hDate || h[1].null ||
		len(h[1].value) > 0xffff || string(h[2].key) != hSeq || len(h[2].value) != 8 ||
		string(h[3].key) != hRunID || h[3].null || len(h[3].value) > 0xffff ||
		binary.BigEndian.Uint64(h[0].value) != binary.LittleEndian.Uint64(value[:8]) {
		return 0, false
	}
	return binary.BigEndian.Uint64(h[2].value), true
}

// add appends one record: to the open run when it continues it, else as a new run or a raw message.
func (f *rawFetcher) add(p int32, off int64, key, value []byte) {
	h := f.hdrs
	seq, ok := rawFastShape(key, value, h)
	if ok {
		r := &f.run
		if r.open && r.partition == p && off == r.first+int64(r.n) && seq == r.seq+uint64(r.n) &&
			r.n < f.c.cfg.maxRun && bytes.Equal(key, r.key) && bytes.Equal(h[1].value, r.date) &&
			bytes.Equal(h[3].value, r.runID) {
			f.out = append(f.out, value...)
			r.n++
			return
		}
		f.closeRun()
		r.open, r.hdrPos, r.partition, r.first, r.seq, r.n = true, len(f.out), p, off, seq, 1
		r.key = append(r.key[:0], key...)
		r.date = append(r.date[:0], h[1].value...)
		r.runID = append(r.runID[:0], h[3].value...)
		f.out = AppendRunHeader(f.out, p, off, seq, 0, key, h[1].value, h[3].value)
		f.out = append(f.out, value...)
		return
	}
	f.closeRun()
	m := Message{Partition: p, Offset: off, Key: key, Value: value}
	if len(h) > 0 {
		m.Headers = make([]kgo.RecordHeader, len(h))
		for i, x := range h {
			var v []byte
			if !x.null {
				v = x.value
			}
			m.Headers[i] = kgo.RecordHeader{Key: string(x.key), Value: v}
		}
	}
	f.out = AppendMessage(f.out, &m)
	f.c.raw.Add(1)
}

// closeRun patches the open run's count and payload length.
func (f *rawFetcher) closeRun() {
	r := &f.run
	if !r.open {
		return
	}
	r.open = false
	payload := RunHeaderSize(r.key, r.date, r.runID) + r.n*RecordSize
	binary.LittleEndian.PutUint32(f.out[r.hdrPos+1:], uint32(payload))
	binary.LittleEndian.PutUint32(f.out[r.hdrPos+FrameHeaderSize+4+8+8:], uint32(r.n))
	f.c.runs.Add(1)
}

// emit writes the frames gathered so far and flushes stdout (a full pipe blocks here:
// backpressure).
func (f *rawFetcher) emit() {
	f.closeRun()
	if len(f.out) > 0 {
		f.c.out.mu.Lock()
		f.c.out.writeLocked(f.out)
		f.c.out.flushLocked()
		f.c.out.mu.Unlock()
	}
	f.c.consumed.Add(f.consumed)
	f.consumed = 0
	if cap(f.out) > 64<<20 {
		f.out = nil
	} else {
		f.out = f.out[:0]
	}
}

// varReader reads Kafka's zig-zag varints and varint-length byte strings; the first error sticks.
type varReader struct {
	b   []byte
	err error
}

var errVarint = errors.New("malformed varint")

func (r *varReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	u, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errVarint
		return 0
	}
	r.b = r.b[n:]
	return int64(u>>1) ^ -int64(u&1)
}

func (r *varReader) skip(n int) {
	if r.err == nil && n > len(r.b) {
		r.err = errShort
	}
	if r.err == nil {
		r.b = r.b[n:]
	}
}

// bytes is a varint-length byte string: nil for length -1 (null), a (possibly empty) slice else.
func (r *varReader) bytes() []byte {
	n := r.varint()
	if r.err != nil || n < 0 {
		return nil
	}
	if int(n) > len(r.b) {
		r.err = errShort
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}
