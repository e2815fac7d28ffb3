package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type consumerConfig struct {
	connFlags
	group              string
	subscribe, assign  bool
	sessionTimeoutMs   int
	heartbeatMs        int
	rebalanceTimeoutMs int
	fetchMaxBytes      int
	fetchMaxPartBytes  int
	fetchMaxWaitMs     int
	maxPollRecords     int
	maxRun             int
	reset              string
	balancer           string
	revokeWaitMs       int
	requestTimeoutMs   int
	outBuffer          int
	rawFetch           bool
}

func parseConsumeFlags(args []string, stderr io.Writer) (consumerConfig, error) {
	var c consumerConfig
	fs := flag.NewFlagSet("consume", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs, "topic to consume (required)")
	fs.StringVar(&c.group, "group", "", "consumer group: membership with --subscribe, commits only with --assign (required)")
	fs.BoolVar(&c.subscribe, "subscribe", false, "join the group and consume the partitions it assigns")
	fs.BoolVar(&c.assign, "assign", false, "no group membership: partitions and offsets come from 'assign' commands")
	fs.IntVar(&c.sessionTimeoutMs, "session-timeout-ms", 10_000, "group session timeout (ms)")
	fs.IntVar(&c.heartbeatMs, "heartbeat-interval-ms", 2_000, "group heartbeat interval (ms)")
	fs.IntVar(&c.rebalanceTimeoutMs, "rebalance-timeout-ms", 60_000, "group rebalance timeout (ms)")
	fs.IntVar(&c.fetchMaxBytes, "fetch-max-bytes", 64<<20, "max bytes of one fetch response")
	fs.IntVar(&c.fetchMaxPartBytes, "fetch-max-partition-bytes", 16<<20, "max bytes per partition in a fetch")
	fs.IntVar(&c.fetchMaxWaitMs, "fetch-max-wait-ms", 100, "how long the broker may wait for data (ms)")
	fs.IntVar(&c.maxPollRecords, "max-poll-records", 262_144, "records taken from the client per poll")
	fs.IntVar(&c.maxRun, "max-run", 65_536, "records per run frame at most")
	fs.StringVar(&c.reset, "reset", "earliest", "where to start without a committed/valid offset: earliest or latest")
	fs.StringVar(&c.balancer, "balancer", "cooperative-sticky", "group balancer: cooperative-sticky, sticky, range, roundrobin")
	fs.IntVar(&c.revokeWaitMs, "revoke-wait-ms", 30_000, "how long a revoke waits for Python's revoke_done (ms)")
	fs.IntVar(&c.requestTimeoutMs, "request-timeout-ms", 30_000, "default timeout of commit/committed/partitions commands (ms)")
	fs.IntVar(&c.outBuffer, "out-buffer", 4<<20, "stdout buffer size (bytes)")
	fs.BoolVar(&c.rawFetch, "raw-fetch", true, "--assign: fetch and walk record batches directly (rawfetch.go); false: franz-go's consumer")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := c.check(fs); err != nil {
		return c, err
	}
	switch {
	case c.group == "":
		return c, errors.New("--group is required")
	case c.subscribe == c.assign:
		return c, errors.New("exactly one of --subscribe and --assign is required")
	case c.reset != "earliest" && c.reset != "latest":
		return c, fmt.Errorf("--reset must be earliest or latest, not %q", c.reset)
	case c.maxRun <= 0 || c.maxRun > 1<<20:
		return c, errors.New("--max-run must be in 1..1048576")
	case c.sessionTimeoutMs <= 0, c.heartbeatMs <= 0, c.rebalanceTimeoutMs <= 0, c.fetchMaxBytes <= 0,
		c.fetchMaxPartBytes <= 0, c.fetchMaxWaitMs < 0, c.maxPollRecords < 0, c.revokeWaitMs < 0,
		c.requestTimeoutMs <= 0, c.outBuffer < 4096:
		return c, errors.New("negative or zero value for a limit or timeout")
	}
	if _, err := balancerOf(c.balancer); err != nil {
		return c, err
	}
	return c, nil
}

func balancerOf(name string) (kgo.GroupBalancer, error) {
	switch name {
	case "cooperative-sticky":
		return kgo.CooperativeStickyBalancer(), nil
	case "sticky":
		return kgo.StickyBalancer(), nil
	case "range":
		return kgo.RangeBalancer(), nil
	case "roundrobin":
		return kgo.RoundRobinBalancer(), nil
	}
	return nil, fmt.Errorf("unknown balancer %q", name)
}

// startOffset maps Kafka's conventions: >= 0 exact, -2 earliest, -1 latest.
func startOffset(o int64) (kgo.Offset, error) {
	switch {
	case o >= 0:
		return kgo.NewOffset().At(o), nil
	case o == -2:
		return kgo.NewOffset().AtStart(), nil
	case o == -1:
		return kgo.NewOffset().AtEnd(), nil
	}
	return kgo.Offset{}, fmt.Errorf("offset %d: use >= 0, -2 (earliest) or -1 (latest)", o)
}

type consumer struct {
	cfg    consumerConfig
	cl     *kgo.Client
	adm    *kadm.Client
	out    *output
	stderr io.Writer

	mu         sync.Mutex // pending assigns and the current poll's cancel
	pending    []*command
	pollCancel context.CancelFunc

	stopping   atomic.Bool
	stopCh     chan struct{}
	stopOnce   sync.Once
	revokeSeq  atomic.Int64
	revokeDone chan int64
	cmds       sync.WaitGroup

	current []int32 // assign mode: assigned partitions (fetch loop only)

	consumed, runs, raw atomic.Int64
	lastErr             string
	lastErrAt           time.Time
	scratch             []byte
}

func runConsume(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cfg, err := parseConsumeFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "qrsdp-kafka-bridge consume: %v\n", err)
		}
		return exitUsage
	}
	c := &consumer{cfg: cfg, out: newOutput(stdout, cfg.outBuffer), stderr: stderr,
		stopCh: make(chan struct{}), revokeDone: make(chan int64, 16)}
	cl, err := kgo.NewClient(c.options()...)
	if err != nil {
		fmt.Fprintf(stderr, "qrsdp-kafka-bridge consume: %v\n", err)
		return exitUsage
	}
	c.cl = cl
	c.adm = kadm.NewClient(cl)
	mode := "assign"
	if cfg.subscribe {
		mode = "subscribe"
	}
	c.out.event(map[string]any{"event": "ready", "mode": mode, "pid": os.Getpid(), "topic": cfg.topic,
		"group": cfg.group})
	go c.readCommands(bufio.NewReaderSize(stdin, 1<<16))
	if cfg.assign && cfg.rawFetch {
		c.rawFetchLoop()
	} else {
		c.fetchLoop()
	}
	c.close()
	return exitOK
}

func (c *consumer) options() []kgo.Opt {
	reset := kgo.NewOffset().AtStart()
	if c.cfg.reset == "latest" {
		reset = kgo.NewOffset().AtEnd()
	}
	opts := append(c.cfg.options(c.stderr),
		kgo.ConsumeResetOffset(reset),
		kgo.FetchMaxBytes(int32(c.cfg.fetchMaxBytes)),
		kgo.FetchMaxPartitionBytes(int32(c.cfg.fetchMaxPartBytes)),
		kgo.FetchMaxWait(time.Duration(c.cfg.fetchMaxWaitMs)*time.Millisecond),
		kgo.BrokerMaxReadBytes(int32(max(c.cfg.fetchMaxBytes, 100<<20)+(1<<20))),
		kgo.WithPools(&fetchPools{}),
	)
	if c.cfg.subscribe {
		bal, _ := balancerOf(c.cfg.balancer)
		opts = append(opts,
			kgo.ConsumerGroup(c.cfg.group),
			kgo.ConsumeTopics(c.cfg.topic),
			kgo.DisableAutoCommit(),
			kgo.Balancers(bal),
			kgo.SessionTimeout(time.Duration(c.cfg.sessionTimeoutMs)*time.Millisecond),
			kgo.HeartbeatInterval(time.Duration(c.cfg.heartbeatMs)*time.Millisecond),
			kgo.RebalanceTimeout(time.Duration(c.cfg.rebalanceTimeoutMs)*time.Millisecond),
			// Revoke callbacks run only between polls: every record handed out before a
			// "revoked" event is on stdout before that event.
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsAssigned(c.onAssigned),
			kgo.OnPartitionsRevoked(c.onRevoked(false)),
			kgo.OnPartitionsLost(c.onRevoked(true)),
		)
	}
	return opts
}

// ---------------------------------------------------------------- commands (stdin goroutine)

func (c *consumer) readCommands(in *bufio.Reader) {
	for {
		typ, payload, err := ReadFrame(in)
		if err != nil {
			if err != io.EOF {
				c.out.event(errorEvent("reading stdin: "+err.Error(), true))
			}
			c.requestStop()
			return
		}
		if typ != FrameJSON {
			c.out.event(errorEvent(fmt.Sprintf("consumer accepts only JSON command frames, got %q", typ), false))
			continue
		}
		var cmd command
		if err := json.Unmarshal(payload, &cmd); err != nil {
			c.out.event(errorEvent("bad command: "+err.Error(), false))
			continue
		}
		switch cmd.Op {
		case "commit", "committed", "partitions":
			c.cmds.Add(1)
			go func() {
				defer c.cmds.Done()
				c.request(&cmd)
			}()
		case "assign":
			if !c.cfg.assign {
				c.out.event(map[string]any{"event": "assigned", "id": idOf(&cmd),
					"error": "assign is only valid with --assign (the group assigns partitions with --subscribe)"})
				continue
			}
			c.mu.Lock()
			c.pending = append(c.pending, &cmd)
			if c.pollCancel != nil {
				c.pollCancel()
			}
			c.mu.Unlock()
		case "revoke_done":
			var id int64
			if cmd.ID != nil {
				id = *cmd.ID
			}
			select {
			case c.revokeDone <- id:
			default:
			}
		case "stats":
			c.out.event(map[string]any{"event": "stats", "id": idOf(&cmd), "consumed": c.consumed.Load(),
				"runs": c.runs.Load(), "raw": c.raw.Load(), "buffered": c.cl.BufferedFetchRecords()})
		case "stop":
			c.requestStop()
			return
		default:
			c.out.event(errorEvent(fmt.Sprintf("unknown consumer command %q", cmd.Op), false))
		}
	}
}

func (c *consumer) requestStop() {
	c.stopOnce.Do(func() {
		c.stopping.Store(true)
		close(c.stopCh)
		c.mu.Lock()
		if c.pollCancel != nil {
			c.pollCancel()
		}
		c.mu.Unlock()
	})
}

func (c *consumer) timeout(cmd *command) time.Duration {
	if cmd.TimeoutMs != nil && *cmd.TimeoutMs > 0 {
		return time.Duration(*cmd.TimeoutMs) * time.Millisecond
	}
	return time.Duration(c.cfg.requestTimeoutMs) * time.Millisecond
}

// request serves commit / committed / partitions (each in its own goroutine: a slow broker
// never stops the stdin reader, so revoke_done still gets through during a commit).
func (c *consumer) request(cmd *command) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout(cmd))
	defer cancel()
	switch cmd.Op {
	case "commit":
		err := c.commit(ctx, cmd.Offsets)
		c.out.event(map[string]any{"event": "committed", "id": idOf(cmd), "error": errString(err)})
	case "committed":
		offsets, err := c.committed(ctx)
		c.out.event(map[string]any{"event": "committed_offsets", "id": idOf(cmd), "offsets": offsets,
			"error": errString(err)})
	case "partitions":
		parts, err := c.partitions(ctx)
		c.out.event(map[string]any{"event": "partitions", "id": idOf(cmd), "partitions": parts,
			"error": errString(err)})
	}
}

// Commit metadata is stored NUL-terminated, as confluent-kafka-python (librdkafka) stores it: that
// client reads metadata as a C string, and the bridge reads its commits with the NUL removed, so
// state committed by either client reads back the same in both.
func storedMetadata(m string) string {
	if m == "" {
		return m
	}
	return m + "\x00"
}

func readMetadata(m string) string { return strings.TrimSuffix(m, "\x00") }

// commit commits synchronously. --assign: a "simple" commit (generation -1, kadm) with each
// partition's metadata. --subscribe: the group's generation (CommitOffsetsSync), metadata set on
// the request just before it is sent.
func (c *consumer) commit(ctx context.Context, offsets []commitOffset) error {
	if len(offsets) == 0 {
		return nil
	}
	if c.cfg.assign {
		offs := make(kadm.Offsets)
		for _, o := range offsets {
			offs.Add(kadm.Offset{Topic: c.cfg.topic, Partition: o.Partition, At: o.Offset, LeaderEpoch: -1,
				Metadata: storedMetadata(o.Metadata)})
		}
		resp, err := c.adm.CommitOffsets(ctx, c.cfg.group, offs)
		if err != nil {
			return err
		}
		return resp.Error()
	}
	meta := make(map[int32]string, len(offsets))
	uncommitted := map[string]map[int32]kgo.EpochOffset{c.cfg.topic: {}}
	for _, o := range offsets {
		uncommitted[c.cfg.topic][o.Partition] = kgo.EpochOffset{Epoch: -1, Offset: o.Offset}
		meta[o.Partition] = storedMetadata(o.Metadata)
	}
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				p := &req.Topics[i].Partitions[j]
				p.Metadata = kmsg.StringPtr(meta[p.Partition])
			}
		}
		return nil
	})
	var rerr error
	c.cl.CommitOffsetsSync(ctx, uncommitted, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest,
		resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			rerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil && rerr == nil {
					rerr = fmt.Errorf("partition %d: %w", p.Partition, err)
				}
			}
		}
	})
	return rerr
}

type committedOffset struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Metadata  string `json:"metadata"`
}

func (c *consumer) committed(ctx context.Context) ([]committedOffset, error) {
	resp, err := c.adm.FetchOffsetsForTopics(ctx, c.cfg.group, c.cfg.topic)
	if err != nil {
		return nil, err
	}
	out := []committedOffset{}
	var firstErr error
	for p, r := range resp[c.cfg.topic] {
		if r.Err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("partition %d: %w", p, r.Err)
			}
			continue
		}
		if r.At < 0 {
			continue // nothing committed
		}
		out = append(out, committedOffset{Partition: p, Offset: r.At, Metadata: readMetadata(r.Metadata)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out, firstErr
}

type partitionInfo struct {
	Partition int32 `json:"partition"`
	Low       int64 `json:"low"`
	High      int64 `json:"high"`
}

func (c *consumer) partitions(ctx context.Context) ([]partitionInfo, error) {
	ends, err := c.adm.ListEndOffsets(ctx, c.cfg.topic)
	if err != nil {
		return nil, err
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("topic %s: %w", c.cfg.topic, err)
	}
	starts, err := c.adm.ListStartOffsets(ctx, c.cfg.topic)
	if err != nil {
		return nil, err
	}
	if err := starts.Error(); err != nil {
		return nil, fmt.Errorf("topic %s: %w", c.cfg.topic, err)
	}
	out := []partitionInfo{}
	for p, e := range ends[c.cfg.topic] {
		info := partitionInfo{Partition: p, High: e.Offset, Low: -1}
		if s, ok := starts.Lookup(c.cfg.topic, p); ok {
			info.Low = s.Offset
		}
		out = append(out, info)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("topic %s not found", c.cfg.topic)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out, nil
}

// ---------------------------------------------------------------- group callbacks

func (c *consumer) onAssigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	ps := m[c.cfg.topic]
	if len(ps) == 0 {
		return
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	c.out.event(map[string]any{"event": "assigned", "partitions": ps})
}

// onRevoked reports revoked (or lost) partitions, then waits (bounded) for Python's revoke_done
// so Python can land and commit what it holds of them first. Commands are still served meanwhile.
func (c *consumer) onRevoked(lost bool) func(context.Context, *kgo.Client, map[string][]int32) {
	return func(ctx context.Context, _ *kgo.Client, m map[string][]int32) {
		ps := m[c.cfg.topic]
		if len(ps) == 0 {
			return
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
		id := c.revokeSeq.Add(1)
		stopping := c.stopping.Load()
		c.out.event(map[string]any{"event": "revoked", "id": id, "partitions": ps, "lost": lost,
			"stopping": stopping})
		if stopping || c.cfg.revokeWaitMs == 0 {
			return
		}
		timer := time.NewTimer(time.Duration(c.cfg.revokeWaitMs) * time.Millisecond)
		defer timer.Stop()
		for {
			select {
			case got := <-c.revokeDone:
				if got == id || got == 0 {
					return
				}
			case <-timer.C:
				c.out.event(errorEvent(fmt.Sprintf("no revoke_done for revoke %d within %d ms; rebalance goes on",
					id, c.cfg.revokeWaitMs), false))
				return
			case <-c.stopCh:
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

// ---------------------------------------------------------------- fetch loop

// nextRound starts one round of a fetch loop: the pending assign commands are applied (apply), and
// the round's context is one that a later assign or a stop cancels. stop: the consumer is stopping.
func (c *consumer) nextRound(apply func(*command)) (ctx context.Context, cancel context.CancelFunc, stop bool) {
	c.mu.Lock()
	cmds := c.pending
	c.pending = nil
	ctx, cancel = context.WithCancel(context.Background())
	c.pollCancel = cancel
	c.mu.Unlock()
	for _, cmd := range cmds {
		apply(cmd)
	}
	if c.stopping.Load() {
		cancel()
		return nil, nil, true
	}
	return ctx, cancel, false
}

func (c *consumer) fetchLoop() {
	for {
		ctx, cancel, stop := c.nextRound(c.applyAssign)
		if stop {
			return
		}
		fs := c.cl.PollRecords(ctx, c.cfg.maxPollRecords)
		cancel()
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			c.reportFetchError(fmt.Sprintf("fetch %s/%d: %v", t, p, err))
		})
		c.emit(fs)
		if c.cfg.subscribe {
			c.cl.AllowRebalance()
		}
		if c.out.failed() != nil { // Python is gone
			c.requestStop()
		}
	}
}

// reportFetchError sends an error event, at most once per 5 s for a repeated message.
func (c *consumer) reportFetchError(msg string) {
	now := time.Now()
	if msg == c.lastErr && now.Sub(c.lastErrAt) < 5*time.Second {
		return
	}
	c.lastErr, c.lastErrAt = msg, now
	c.out.event(errorEvent(msg, false))
}

// applyAssign replaces the whole assignment (assign mode). Buffered fetches of the old
// assignment are dropped by franz-go; frames sent before the "assigned" event belong to it.
func (c *consumer) applyAssign(cmd *command) {
	add := make(map[int32]kgo.Offset, len(cmd.Partitions))
	var bad []string
	for _, p := range cmd.Partitions {
		o, err := startOffset(p.Offset)
		if err != nil {
			bad = append(bad, fmt.Sprintf("partition %d: %v", p.Partition, err))
			continue
		}
		add[p.Partition] = o
	}
	if len(bad) > 0 {
		c.out.event(map[string]any{"event": "assigned", "id": idOf(cmd), "error": strings.Join(bad, "; ")})
		return
	}
	if len(c.current) > 0 {
		c.cl.RemoveConsumePartitions(map[string][]int32{c.cfg.topic: c.current})
	}
	c.current = c.current[:0]
	if len(add) > 0 {
		c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{c.cfg.topic: add})
		for p := range add {
			c.current = append(c.current, p)
		}
	}
	sort.Slice(c.current, func(i, j int) bool { return c.current[i] < c.current[j] })
	c.out.event(map[string]any{"event": "assigned", "id": idOf(cmd), "partitions": append([]int32{}, c.current...),
		"offsets": cmd.Partitions, "error": nil})
}

// fastShape reports whether r is an event message in the producer's exact shape (value of 26
// bytes; headers ts_ns (8 bytes), date, seq (8 bytes), run_id in that order; non-null key)
// and returns its seq. The ts_ns header must equal the record's own ts_ns (the little-endian u64
// at byte 0 of the value), as the producers write it: a run does not carry that header, so the
// messages of a run can be rebuilt exactly from it (e.g. to dead-letter them unchanged).
func fastShape(r *kgo.Record) (uint64, bool) {
	if len(r.Value) != RecordSize || len(r.Headers) != 4 || r.Key == nil || len(r.Key) > 0xffff {
		return 0, false
	}
	h := r.Headers
	if h[0].Key != hTsNs || len(h[0].Value) != 8 || h[1].Key != hDate || len(h[1].Value) > 0xffff ||
		h[2].Key != hSeq || len(h[2].Value) != 8 || h[3].Key != hRunID || len(h[3].Value) > 0xffff ||
		binary.BigEndian.Uint64(h[0].Value) != binary.LittleEndian.Uint64(r.Value[:8]) {
		return 0, false
	}
	return binary.BigEndian.Uint64(h[2].Value), true
}

// runLength is how many records from recs[i] on form one run: same partition, key, date and
// run_id, consecutive offsets and consecutive seq, at most maxRun. 0 when recs[i] is not in the
// fast-path shape (it goes out as a raw message).
func runLength(recs []*kgo.Record, i, maxRun int) int {
	first := recs[i]
	seq, ok := fastShape(first)
	if !ok {
		return 0
	}
	n := 1
	for i+n < len(recs) && n < maxRun {
		r := recs[i+n]
		s, ok := fastShape(r)
		if !ok || s != seq+uint64(n) || r.Offset != first.Offset+int64(n) || r.Partition != first.Partition ||
			!bytes.Equal(r.Key, first.Key) || !bytes.Equal(r.Headers[1].Value, first.Headers[1].Value) ||
			!bytes.Equal(r.Headers[3].Value, first.Headers[3].Value) {
			break
		}
		n++
	}
	return n
}

// appendRecords appends the frames for one partition's records (runs and raw messages).
func appendRecords(dst []byte, recs []*kgo.Record, maxRun int) (out []byte, runs, raw int) {
	for i := 0; i < len(recs); {
		if n := runLength(recs, i, maxRun); n > 0 {
			f := recs[i]
			dst = AppendRunHeader(dst, f.Partition, f.Offset, binary.BigEndian.Uint64(f.Headers[2].Value),
				uint32(n), f.Key, f.Headers[1].Value, f.Headers[3].Value)
			for _, r := range recs[i : i+n] {
				dst = append(dst, r.Value...)
			}
			i += n
			runs++
			continue
		}
		r := recs[i]
		dst = AppendMessage(dst, &Message{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
			Headers: r.Headers})
		i++
		raw++
	}
	return dst, runs, raw
}

// emit writes a poll's records; stdout is flushed when the client has nothing more buffered,
// so small batches are not held back. A full pipe blocks here: that stops fetching
// (backpressure); heartbeats go on in franz-go's own goroutines.
func (c *consumer) emit(fs kgo.Fetches) {
	var n int64
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		n += int64(len(p.Records))
		var runs, raw int
		c.scratch, runs, raw = appendRecords(c.scratch[:0], p.Records, c.cfg.maxRun)
		c.runs.Add(int64(runs))
		c.raw.Add(int64(raw))
		c.out.writeLocked(c.scratch)
		recycle(p.Records) // copied into the frames: their memory goes back to the pools
		if cap(c.scratch) > 64<<20 {
			c.scratch = nil // do not keep a huge buffer after a burst
		}
	})
	c.consumed.Add(n)
	if c.cl.BufferedFetchRecords() == 0 {
		c.out.flushLocked()
	}
}

func (c *consumer) close() {
	waited := make(chan struct{})
	go func() { c.cmds.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(30 * time.Second):
	}
	done := make(chan struct{})
	go func() {
		if c.cfg.subscribe {
			c.cl.CloseAllowingRebalance() // leaves the group: the last "revoked" event does not wait
		} else {
			c.cl.Close()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Fprintln(c.stderr, "qrsdp-kafka-bridge consume: client close did not finish within 30 s; exiting")
	}
	c.out.event(map[string]any{"event": "stopped", "consumed": c.consumed.Load(), "runs": c.runs.Load(),
		"raw": c.raw.Load()})
}
