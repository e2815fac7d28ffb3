package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Header names of docs/kafka-message-format.md.
const (
	hTsNs  = "ts_ns"
	hDate  = "date"
	hSeq   = "seq"
	hRunID = "run_id"
)

const errQueueFull = "local queue full (max buffered records or bytes reached)"

// sessionStats counts one (key, date)'s records. produced = records handed to the bridge
// (queued or not); delivered = acknowledged by the broker; failed = delivery failed, aborted,
// or never queued. After a flush, produced = delivered + failed (+ pending, see snapshot).
type sessionStats struct {
	produced  atomic.Int64
	delivered atomic.Int64
	failed    atomic.Int64
	mu        sync.Mutex
	firstErr  string
	promise   func(*kgo.Record, error) // shared by every record of the session: no allocation per run
}

func newSessionStats() *sessionStats {
	st := &sessionStats{}
	st.promise = func(_ *kgo.Record, err error) {
		if err == nil {
			st.delivered.Add(1)
			return
		}
		st.failed.Add(1)
		st.noteError(err)
	}
	return st
}

func (st *sessionStats) noteError(err error) {
	msg := err.Error()
	if errors.Is(err, kgo.ErrMaxBuffered) {
		msg = errQueueFull
	}
	st.mu.Lock()
	if st.firstErr == "" {
		st.firstErr = msg
	}
	st.mu.Unlock()
}

type statsSnapshot struct {
	Produced   int64   `json:"produced"`
	Delivered  int64   `json:"delivered"`
	Failed     int64   `json:"failed"`
	Pending    int64   `json:"pending"`
	FirstError *string `json:"first_error"`
}

// snapshot reads the counters; with undeliveredFailed, records still pending count as failed
// (what a flush that gave up reports) and are also shown as pending.
func (st *sessionStats) snapshot(undeliveredFailed bool) statsSnapshot {
	s := statsSnapshot{Produced: st.produced.Load(), Delivered: st.delivered.Load(), Failed: st.failed.Load()}
	s.Pending = max(0, s.Produced-s.Delivered-s.Failed)
	if undeliveredFailed {
		s.Failed += s.Pending
	}
	st.mu.Lock()
	if st.firstErr != "" {
		e := st.firstErr
		s.FirstError = &e
	} else if undeliveredFailed && s.Pending > 0 {
		e := "undelivered when the flush ended"
		s.FirstError = &e
	}
	st.mu.Unlock()
	return s
}

type statsTable struct {
	mu sync.Mutex
	m  map[string]*sessionStats
}

func statsKey(key, date []byte) string { return string(key) + "|" + string(date) }

func (t *statsTable) get(key, date []byte) *sessionStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]*sessionStats)
	}
	k := statsKey(key, date)
	st := t.m[k]
	if st == nil {
		st = newSessionStats()
		t.m[k] = st
	}
	return st
}

// report is the body of the "flushed", "stats" and "closed" events.
func (t *statsTable) report(undeliveredFailed bool) (map[string]statsSnapshot, statsSnapshot) {
	t.mu.Lock()
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		keys = append(keys, k)
	}
	t.mu.Unlock()
	sort.Strings(keys)
	out := make(map[string]statsSnapshot, len(keys))
	var tot statsSnapshot
	for _, k := range keys {
		t.mu.Lock()
		st := t.m[k]
		t.mu.Unlock()
		s := st.snapshot(undeliveredFailed)
		out[k] = s
		tot.Produced += s.Produced
		tot.Delivered += s.Delivered
		tot.Failed += s.Failed
		tot.Pending += s.Pending
		if tot.FirstError == nil {
			tot.FirstError = s.FirstError
		}
	}
	return out, tot
}

// buildRunRecords turns a run into Kafka records byte-identical to what KafkaSink produces:
// value = the 26-byte record, key = run key, headers ts_ns (u64 BE of the record's little-endian
// ts_ns at byte 0), date, seq (u64 BE, first_seq + i), run_id. Records, headers and the 16
// header bytes per record come from three allocations per run.
func buildRunRecords(run *Run, topic string) []kgo.Record {
	n := int(run.Count)
	recs := make([]kgo.Record, n)
	hdrs := make([]kgo.RecordHeader, 4*n)
	be := make([]byte, 16*n)
	for i := range n {
		v := run.Value(i)
		b := be[16*i : 16*i+16 : 16*i+16]
		binary.BigEndian.PutUint64(b[0:8], binary.LittleEndian.Uint64(v[0:8]))
		binary.BigEndian.PutUint64(b[8:16], run.FirstSeq+uint64(i))
		h := hdrs[4*i : 4*i+4 : 4*i+4]
		h[0] = kgo.RecordHeader{Key: hTsNs, Value: b[0:8:8]}
		h[1] = kgo.RecordHeader{Key: hDate, Value: run.Date}
		h[2] = kgo.RecordHeader{Key: hSeq, Value: b[8:16:16]}
		h[3] = kgo.RecordHeader{Key: hRunID, Value: run.RunID}
		recs[i] = kgo.Record{Topic: topic, Key: run.Key, Value: v, Headers: h}
	}
	return recs
}

// headerValue is the value of the first header called name, or nil.
func headerValue(hs []kgo.RecordHeader, name string) []byte {
	for _, h := range hs {
		if h.Key == name {
			return h.Value
		}
	}
	return nil
}

type producerConfig struct {
	connFlags
	lingerMs          int
	deliveryTimeoutMs int
	maxBufferedRecs   int
	maxBufferedBytes  int
	closeTimeoutMs    int
	abortWaitMs       int
	batchMaxBytes     int
}

func parseProduceFlags(args []string, stderr io.Writer) (producerConfig, error) {
	var c producerConfig
	fs := flag.NewFlagSet("produce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs, "topic to produce to (required)")
	fs.IntVar(&c.lingerMs, "linger-ms", 5, "producer linger (ms)")
	fs.IntVar(&c.deliveryTimeoutMs, "delivery-timeout-ms", 120_000, "how long a record may wait for the broker before it fails (ms)")
	fs.IntVar(&c.maxBufferedRecs, "max-buffered-records", 4_000_000, "records buffered at most (~450 bytes of memory each); more fail at once as 'local queue full'")
	fs.IntVar(&c.maxBufferedBytes, "max-buffered-bytes", 2_147_482_624, "bytes (keys+values+headers) buffered at most; 0 = no limit")
	fs.IntVar(&c.closeTimeoutMs, "close-timeout-ms", 30_000, "flush timeout at stdin EOF when no flush command gave one (ms)")
	fs.IntVar(&c.abortWaitMs, "abort-wait-ms", 10_000, "after a flush timed out, wait at most this long for in-flight requests while aborting (ms)")
	fs.IntVar(&c.batchMaxBytes, "batch-max-bytes", 1_000_000, "max bytes of one record batch")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := c.check(fs); err != nil {
		return c, err
	}
	if c.lingerMs < 0 || c.deliveryTimeoutMs <= 0 || c.maxBufferedRecs <= 0 || c.maxBufferedBytes < 0 ||
		c.closeTimeoutMs < 0 || c.abortWaitMs < 0 || c.batchMaxBytes <= 0 {
		return c, errors.New("negative or zero value for a limit or timeout")
	}
	return c, nil
}

func (c *producerConfig) options(stderr io.Writer) []kgo.Opt {
	opts := append(c.connFlags.options(stderr),
		kgo.DefaultProduceTopic(c.topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence is franz-go's default and needs acks=all
		kgo.ProducerLinger(time.Duration(c.lingerMs)*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		// Kafka's murmur2 for keyed records: the Java client's and librdkafka's murmur2_random.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.RecordDeliveryTimeout(time.Duration(c.deliveryTimeoutMs)*time.Millisecond),
		kgo.MaxBufferedRecords(c.maxBufferedRecs),
		kgo.ProducerBatchMaxBytes(int32(c.batchMaxBytes)),
	)
	if c.maxBufferedBytes > 0 {
		opts = append(opts, kgo.MaxBufferedBytes(c.maxBufferedBytes))
	}
	return opts
}

type producer struct {
	cfg          producerConfig
	cl           *kgo.Client
	stderr       io.Writer
	out          *output
	stats        statsTable
	closeTimeout time.Duration
}

func runProduce(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := parseProduceFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "qrsdp-kafka-bridge produce: %v\n", err)
		}
		return exitUsage
	}
	cl, err := kgo.NewClient(cfg.options(stderr)...)
	if err != nil {
		fmt.Fprintf(stderr, "qrsdp-kafka-bridge produce: %v\n", err)
		return exitUsage
	}
	p := &producer{cfg: cfg, cl: cl, stderr: stderr, out: newOutput(stdout, 1<<16),
		closeTimeout: time.Duration(cfg.closeTimeoutMs) * time.Millisecond}
	p.out.event(map[string]any{"event": "ready", "mode": "produce", "pid": os.Getpid(), "topic": cfg.topic})
	code := p.loop(bufio.NewReaderSize(stdin, 4<<20))
	p.finish()
	return code
}

// loop reads frames until EOF, a stop command or a corrupt stream.
func (p *producer) loop(in *bufio.Reader) int {
	ctx := context.Background()
	for {
		typ, payload, err := ReadFrame(in)
		if err == io.EOF {
			return exitOK
		}
		if err != nil {
			p.out.event(errorEvent("reading stdin: "+err.Error(), true))
			fmt.Fprintf(p.stderr, "qrsdp-kafka-bridge produce: reading stdin: %v\n", err)
			return exitFatal
		}
		switch typ {
		case FrameRun:
			run, err := DecodeRun(payload)
			if err != nil {
				p.out.event(errorEvent(err.Error(), false))
				continue
			}
			p.produceRun(ctx, &run)
		case FrameMessage:
			m, err := DecodeMessage(payload)
			if err != nil {
				p.out.event(errorEvent(err.Error(), false))
				continue
			}
			st := p.stats.get(m.Key, headerValue(m.Headers, hDate))
			st.produced.Add(1)
			p.cl.TryProduce(ctx, &kgo.Record{Topic: p.cfg.topic, Key: m.Key, Value: m.Value, Headers: m.Headers}, st.promise)
		case FrameJSON:
			var c command
			if err := json.Unmarshal(payload, &c); err != nil {
				p.out.event(errorEvent("bad command: "+err.Error(), false))
				continue
			}
			if stop := p.command(&c); stop {
				return exitOK
			}
		default:
			p.out.event(errorEvent(fmt.Sprintf("unknown frame type %q", typ), true))
			fmt.Fprintf(p.stderr, "qrsdp-kafka-bridge produce: unknown frame type %q\n", typ)
			return exitFatal
		}
	}
}

// produceRun hands every record of the run to the client without ever blocking on the broker:
// TryProduce fails a record at once (ErrMaxBuffered) when the buffer is full.
func (p *producer) produceRun(ctx context.Context, run *Run) {
	if run.Count == 0 {
		return
	}
	st := p.stats.get(run.Key, run.Date)
	recs := buildRunRecords(run, p.cfg.topic)
	st.produced.Add(int64(len(recs)))
	for i := range recs {
		p.cl.TryProduce(ctx, &recs[i], st.promise)
	}
}

func (p *producer) command(c *command) (stop bool) {
	switch c.Op {
	case "flush":
		timeout := p.closeTimeout
		if c.TimeoutMs != nil {
			timeout = time.Duration(*c.TimeoutMs) * time.Millisecond
			p.closeTimeout = timeout
		}
		p.out.event(p.flush("flushed", timeout, idOf(c)))
	case "stats":
		stats, totals := p.stats.report(false)
		p.out.event(map[string]any{"event": "stats", "id": idOf(c), "stats": stats, "totals": totals,
			"buffered": p.cl.BufferedProduceRecords()})
	case "ping":
		timeout := 5 * time.Second
		if c.TimeoutMs != nil {
			timeout = time.Duration(*c.TimeoutMs) * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := p.cl.Ping(ctx)
		cancel()
		p.out.event(map[string]any{"event": "pong", "id": idOf(c), "error": errString(err)})
	case "stop":
		if c.TimeoutMs != nil {
			p.closeTimeout = time.Duration(*c.TimeoutMs) * time.Millisecond
		}
		return true
	default:
		p.out.event(errorEvent(fmt.Sprintf("unknown producer command %q", c.Op), false))
	}
	return false
}

// flush waits up to timeout for every buffered record to be acknowledged, then aborts what is
// left (counted failed) and returns the event with per-(key, date) stats.
func (p *producer) flush(event string, timeout time.Duration, id any) map[string]any {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := p.cl.Flush(ctx)
	cancel()
	timedOut := err != nil
	var aborted int64
	abortErr := error(nil)
	if timedOut {
		aborted = p.cl.BufferedProduceRecords()
		actx, acancel := context.WithTimeout(context.Background(), time.Duration(p.cfg.abortWaitMs)*time.Millisecond)
		abortErr = p.cl.AbortBufferedRecords(actx)
		acancel()
	}
	stats, totals := p.stats.report(true)
	ev := map[string]any{"event": event, "stats": stats, "totals": totals, "timed_out": timedOut,
		"aborted": aborted, "seconds": time.Since(start).Seconds()}
	if id != nil {
		ev["id"] = id
	}
	if abortErr != nil {
		ev["abort_error"] = abortErr.Error()
	}
	return ev
}

// finish: final flush with the last timeout, the "closed" event, client closed.
func (p *producer) finish() {
	p.out.event(p.flush("closed", p.closeTimeout, nil))
	done := make(chan struct{})
	go func() { p.cl.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		fmt.Fprintln(p.stderr, "qrsdp-kafka-bridge produce: client close did not finish within 10 s; exiting")
	}
}
