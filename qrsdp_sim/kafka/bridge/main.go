// Command qrsdp-kafka-bridge does the per-message Kafka work for QRSDP's Python processes.
//
// Python exchanges columnar batches (runs of 26-byte event records) with it over stdin/stdout;
// the bridge produces or consumes one Kafka message per record with franz-go, in the message
// format of docs/kafka-message-format.md. It runs as a subprocess so that a crash on the Kafka
// side can never take down a simulation or its .qrsdp files. Protocol: docs/kafka-bridge.md.
//
//	qrsdp-kafka-bridge produce --brokers B --topic T [options]
//	qrsdp-kafka-bridge consume --brokers B --topic T --group G (--subscribe | --assign) [options]
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

const usageText = `usage: qrsdp-kafka-bridge COMMAND [options]

commands:
  produce   read frames from stdin, produce one Kafka message per record
  consume   consume a topic, write runs / raw messages / events to stdout

'qrsdp-kafka-bridge COMMAND -h' lists the options of a command.
`

// exit codes
const (
	exitOK    = 0
	exitFatal = 1
	exitUsage = 2
)

func main() {
	// A reader that went away is an error on write (handled: the consumer stops, the producer
	// finishes its flush), not a SIGPIPE that kills the process before it has flushed.
	signal.Ignore(syscall.SIGPIPE)
	stop := startCPUProfile(os.Getenv("QRSDP_BRIDGE_CPUPROFILE"), os.Stderr)
	code := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// startCPUProfile writes a CPU profile to path (unset: nothing) until the returned stop is called:
// where a benchmark's bridge time goes (`go tool pprof -top BINARY PROFILE`).
func startCPUProfile(path string, stderr io.Writer) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "qrsdp-kafka-bridge: QRSDP_BRIDGE_CPUPROFILE: %v\n", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "produce":
		return runProduce(args[1:], stdin, stdout, stderr)
	case "consume":
		return runConsume(args[1:], stdin, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		fmt.Fprintf(stderr, "qrsdp-kafka-bridge: unknown command %q\n\n%s", args[0], usageText)
		return exitUsage
	}
}

// output serialises frames to stdout. Data frames from the fetch loop and events from other
// goroutines go through the same buffered writer, under one lock, so their order is kept.
type output struct {
	mu  sync.Mutex
	w   *bufio.Writer
	buf []byte
	err error // first write error (Python gone): later writes are dropped
}

func newOutput(w io.Writer, size int) *output {
	return &output{w: bufio.NewWriterSize(w, size)}
}

// event writes one JSON event frame and flushes (events are never held back).
func (o *output) event(v any) {
	doc, err := json.Marshal(v)
	if err != nil {
		doc = []byte(fmt.Sprintf(`{"event":"error","message":%q,"fatal":false}`, "json: "+err.Error()))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf = AppendJSONFrame(o.buf[:0], doc)
	o.writeLocked(o.buf)
	o.flushLocked()
}

func (o *output) writeLocked(b []byte) {
	if o.err != nil {
		return
	}
	if _, err := o.w.Write(b); err != nil {
		o.err = err
	}
}

func (o *output) flushLocked() {
	if o.err != nil {
		return
	}
	if err := o.w.Flush(); err != nil {
		o.err = err
	}
}

func (o *output) failed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// errorEvent is {"event":"error","message":..,"fatal":..}.
func errorEvent(msg string, fatal bool) map[string]any {
	return map[string]any{"event": "error", "message": msg, "fatal": fatal}
}

// command is one JSON control object from Python.
type command struct {
	Op         string            `json:"op"`
	ID         *int64            `json:"id,omitempty"`
	TimeoutMs  *int64            `json:"timeout_ms,omitempty"`
	Offsets    []commitOffset    `json:"offsets,omitempty"`
	Partitions []assignPartition `json:"partitions,omitempty"`
}

type commitOffset struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Metadata  string `json:"metadata"`
}

type assignPartition struct {
	Partition int32 `json:"partition"`
	Offset    int64 `json:"offset"`
}

func idOf(c *command) any {
	if c.ID == nil {
		return nil
	}
	return *c.ID
}

func errString(err error) any {
	if err == nil {
		return nil
	}
	return err.Error()
}

// kgoLogLevel maps --log-level to franz-go's levels.
func kgoLogLevel(s string) (kgo.LogLevel, error) {
	switch strings.ToLower(s) {
	case "none", "off":
		return kgo.LogLevelNone, nil
	case "error":
		return kgo.LogLevelError, nil
	case "warn", "warning":
		return kgo.LogLevelWarn, nil
	case "info":
		return kgo.LogLevelInfo, nil
	case "debug":
		return kgo.LogLevelDebug, nil
	}
	return kgo.LogLevelNone, fmt.Errorf("unknown log level %q (none, error, warn, info, debug)", s)
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// connFlags are the connection settings every subcommand takes.
type connFlags struct {
	brokers, topic     string
	dialTimeoutMs      int
	clientID, logLevel string
}

func (f *connFlags) register(fs *flag.FlagSet, topicUsage string) {
	fs.StringVar(&f.brokers, "brokers", "", "bootstrap brokers, host:port[,host:port...] (required)")
	fs.StringVar(&f.topic, "topic", "", topicUsage)
	fs.IntVar(&f.dialTimeoutMs, "dial-timeout-ms", 5_000, "TCP connect timeout (ms)")
	fs.StringVar(&f.clientID, "client-id", "qrsdp-kafka-bridge", "Kafka client id")
	fs.StringVar(&f.logLevel, "log-level", "warn", "franz-go log level on stderr: none, error, warn, info, debug")
}

// check validates them once fs has parsed the arguments.
func (f *connFlags) check(fs *flag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	case f.brokers == "" || len(splitBrokers(f.brokers)) == 0:
		return errors.New("--brokers is required")
	case f.topic == "":
		return errors.New("--topic is required")
	case f.dialTimeoutMs <= 0:
		return errors.New("negative or zero value for a limit or timeout")
	}
	_, err := kgoLogLevel(f.logLevel)
	return err
}

// options are the client options they stand for.
func (f *connFlags) options(stderr io.Writer) []kgo.Opt {
	level, _ := kgoLogLevel(f.logLevel)
	return []kgo.Opt{
		kgo.SeedBrokers(splitBrokers(f.brokers)...),
		kgo.ClientID(f.clientID),
		kgo.DialTimeout(time.Duration(f.dialTimeoutMs) * time.Millisecond),
		kgo.WithLogger(kgo.BasicLogger(stderr, level, nil)),
	}
}
