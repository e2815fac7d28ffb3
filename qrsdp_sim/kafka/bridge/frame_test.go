package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// record builds a 26-byte QRSDP record with the given ts_ns (little-endian at offset 0).
func record(ts uint64, fill byte) []byte {
	v := bytes.Repeat([]byte{fill}, RecordSize)
	binary.LittleEndian.PutUint64(v, ts)
	return v
}

func readAll(t *testing.T, stream []byte) (types []byte, payloads [][]byte) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(stream))
	for {
		typ, p, err := ReadFrame(r)
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("ReadFrame: %v", err)
		}
		types = append(types, typ)
		payloads = append(payloads, p)
	}
}

func TestRunRoundTrip(t *testing.T) {
	var values []byte
	for i := range 3 {
		values = append(values, record(uint64(1000+i), byte(i))...)
	}
	in := Run{Partition: 5, FirstOffset: 1 << 40, FirstSeq: 77, Count: 3, Key: []byte("AAPL"),
		Date: []byte("2026-01-05"), RunID: []byte("run-1"), Values: values}
	frame := AppendRun(nil, &in)
	if got, want := len(frame), FrameHeaderSize+RunHeaderSize(in.Key, in.Date, in.RunID)+3*RecordSize; got != want {
		t.Fatalf("frame is %d bytes, want %d", got, want)
	}
	if frame[0] != 'R' || binary.LittleEndian.Uint32(frame[1:5]) != uint32(len(frame)-FrameHeaderSize) {
		t.Fatalf("bad frame header % x", frame[:5])
	}
	types, payloads := readAll(t, frame)
	if len(types) != 1 || types[0] != FrameRun {
		t.Fatalf("types %q", types)
	}
	out, err := DecodeRun(payloads[0])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v != %+v", out, in)
	}
	if !bytes.Equal(out.Value(2), record(1002, 2)) {
		t.Fatal("Value(2)")
	}
}

func TestRunFromPythonHasMinusOnes(t *testing.T) {
	// Python's producer side sends partition -1 and first_offset -1.
	in := Run{Partition: -1, FirstOffset: -1, FirstSeq: 0, Count: 1, Key: []byte("X"), Date: []byte("d"),
		RunID: []byte{}, Values: record(1, 0)}
	_, payloads := readAll(t, AppendRun(nil, &in))
	out, err := DecodeRun(payloads[0])
	if err != nil || out.Partition != -1 || out.FirstOffset != -1 {
		t.Fatalf("%+v %v", out, err)
	}
}

func TestDecodeRunRejectsBadLengths(t *testing.T) {
	in := Run{Partition: 0, Count: 1, Key: []byte("K"), Date: []byte("D"), RunID: []byte("R"), Values: record(1, 0)}
	_, payloads := readAll(t, AppendRun(nil, &in))
	binary.LittleEndian.PutUint32(payloads[0][20:], 2) // says 2 records, carries 1
	if _, err := DecodeRun(payloads[0]); err == nil {
		t.Fatal("expected an error for a count/length mismatch")
	}
	if _, err := DecodeRun([]byte{1, 2, 3}); err == nil {
		t.Fatal("expected an error for a short payload")
	}
}

func TestMessageRoundTrip(t *testing.T) {
	cases := []Message{
		{Partition: 2, Offset: 99, Key: []byte("MSFT"), Value: []byte{}, Headers: []kgo.RecordHeader{
			{Key: "date", Value: []byte("2026-01-05")}, {Key: "seq", Value: []byte{0, 0, 0, 0, 0, 0, 0, 9}},
			{Key: "eos", Value: make([]byte, 16)}, {Key: "nil", Value: nil}, {Key: "empty", Value: []byte{}},
		}},
		{Partition: 0, Offset: 0, Key: nil, Value: nil},
		{Partition: -1, Offset: -1, Key: []byte{}, Value: bytes.Repeat([]byte{7}, 25)},
	}
	var stream []byte
	for i := range cases {
		stream = AppendMessage(stream, &cases[i])
	}
	types, payloads := readAll(t, stream)
	if len(types) != len(cases) {
		t.Fatalf("%d frames", len(types))
	}
	for i, p := range payloads {
		if types[i] != FrameMessage {
			t.Fatalf("type %q", types[i])
		}
		m, err := DecodeMessage(p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m, cases[i]) {
			t.Fatalf("case %d: %#v != %#v", i, m, cases[i])
		}
		// null and empty stay distinct
		if (m.Key == nil) != (cases[i].Key == nil) || (m.Value == nil) != (cases[i].Value == nil) {
			t.Fatalf("case %d: null/empty mixed up", i)
		}
	}
}

func TestDecodeMessageRejectsTrailingBytes(t *testing.T) {
	frame := AppendMessage(nil, &Message{Key: []byte("K"), Value: []byte("V")})
	if _, err := DecodeMessage(append(frame[FrameHeaderSize:], 0)); err == nil {
		t.Fatal("expected an error")
	}
	if _, err := DecodeMessage(frame[FrameHeaderSize : len(frame)-1]); err == nil {
		t.Fatal("expected an error for a cut payload")
	}
}

func TestJSONFrameAndTruncation(t *testing.T) {
	frame := AppendJSONFrame(nil, []byte(`{"op":"flush","timeout_ms":5}`))
	types, payloads := readAll(t, frame)
	if types[0] != FrameJSON || string(payloads[0]) != `{"op":"flush","timeout_ms":5}` {
		t.Fatalf("%q %q", types, payloads)
	}
	for cut := 1; cut < len(frame); cut++ {
		_, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(frame[:cut])))
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: %v, want ErrUnexpectedEOF", cut, err)
		}
	}
	huge := AppendFrameHeader(nil, 'J', MaxPayload+1)
	if _, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(huge))); err == nil {
		t.Fatal("expected an error for an oversized frame")
	}
}

func TestBuildRunRecordsMatchesKafkaSink(t *testing.T) {
	values := append(record(0x0102030405060708, 1), record(42, 2)...)
	run := Run{Count: 2, FirstSeq: 1000, Key: []byte("AAPL"), Date: []byte("2026-01-05"), RunID: []byte("r"),
		Values: values}
	recs := buildRunRecords(&run, "topic")
	if len(recs) != 2 {
		t.Fatal(len(recs))
	}
	for i, r := range recs {
		if r.Topic != "topic" || string(r.Key) != "AAPL" || !bytes.Equal(r.Value, values[26*i:26*i+26]) {
			t.Fatalf("record %d: %+v", i, r)
		}
		names := []string{r.Headers[0].Key, r.Headers[1].Key, r.Headers[2].Key, r.Headers[3].Key}
		if !reflect.DeepEqual(names, []string{"ts_ns", "date", "seq", "run_id"}) || len(r.Headers) != 4 {
			t.Fatalf("header order %v", names)
		}
		ts := binary.LittleEndian.Uint64(values[26*i:])
		if binary.BigEndian.Uint64(r.Headers[0].Value) != ts || len(r.Headers[0].Value) != 8 {
			t.Fatalf("ts_ns header % x for ts %d", r.Headers[0].Value, ts)
		}
		if binary.BigEndian.Uint64(r.Headers[2].Value) != 1000+uint64(i) || len(r.Headers[2].Value) != 8 {
			t.Fatalf("seq header % x", r.Headers[2].Value)
		}
		if string(r.Headers[1].Value) != "2026-01-05" || string(r.Headers[3].Value) != "r" {
			t.Fatalf("date/run_id headers")
		}
	}
	// the first record's ts_ns header, byte for byte (big-endian of the little-endian field)
	if !bytes.Equal(recs[0].Headers[0].Value, []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("% x", recs[0].Headers[0].Value)
	}
	// appending to one record's header slice must not clobber the next record's headers
	recs[0].Headers = append(recs[0].Headers, kgo.RecordHeader{Key: "x"})
	if recs[1].Headers[0].Key != "ts_ns" {
		t.Fatal("header slices overlap")
	}
}

// event is a consumed record in the producer's shape.
func event(partition int32, offset int64, key, date, runID string, seq uint64) *kgo.Record {
	s := make([]byte, 8)
	binary.BigEndian.PutUint64(s, seq)
	v := record(seq*10, byte(seq))
	ts := make([]byte, 8)
	binary.BigEndian.PutUint64(ts, seq*10)
	return &kgo.Record{Partition: partition, Offset: offset, Key: []byte(key), Value: v, Headers: []kgo.RecordHeader{
		{Key: "ts_ns", Value: ts}, {Key: "date", Value: []byte(date)}, {Key: "seq", Value: s},
		{Key: "run_id", Value: []byte(runID)},
	}}
}

type span struct {
	kind          byte
	offset        int64
	seq           uint64
	count         uint32
	key, date, id string
}

func frames(t *testing.T, recs []*kgo.Record, maxRun int) []span {
	t.Helper()
	stream, runs, raw := appendRecords(nil, recs, maxRun)
	types, payloads := readAll(t, stream)
	var out []span
	total := 0
	for i, p := range payloads {
		switch types[i] {
		case FrameRun:
			r, err := DecodeRun(p)
			if err != nil {
				t.Fatal(err)
			}
			for k := range int(r.Count) {
				if !bytes.Equal(r.Value(k), recs[total+k].Value) {
					t.Fatalf("run value %d differs", k)
				}
			}
			total += int(r.Count)
			out = append(out, span{'R', r.FirstOffset, r.FirstSeq, r.Count, string(r.Key), string(r.Date), string(r.RunID)})
		case FrameMessage:
			m, err := DecodeMessage(p)
			if err != nil {
				t.Fatal(err)
			}
			total++
			out = append(out, span{kind: 'M', offset: m.Offset, key: string(m.Key)})
		default:
			t.Fatalf("type %q", types[i])
		}
	}
	if total != len(recs) {
		t.Fatalf("frames cover %d of %d records", total, len(recs))
	}
	nr, nm := 0, 0
	for _, s := range out {
		if s.kind == 'R' {
			nr++
		} else {
			nm++
		}
	}
	if nr != runs || nm != raw {
		t.Fatalf("counts %d/%d != %d/%d", runs, raw, nr, nm)
	}
	return out
}

func TestRunsSplitAtDiscontinuities(t *testing.T) {
	eos := &kgo.Record{Partition: 0, Offset: 13, Key: []byte("A"), Value: []byte{}, Headers: []kgo.RecordHeader{
		{Key: "date", Value: []byte("d1")}, {Key: "seq", Value: make([]byte, 8)}}}
	bad := event(0, 16, "A", "d2", "r", 3)
	bad.Value = bad.Value[:25]
	reordered := event(0, 17, "A", "d2", "r", 4)
	reordered.Headers[0], reordered.Headers[1] = reordered.Headers[1], reordered.Headers[0]
	recs := []*kgo.Record{
		event(0, 10, "A", "d1", "r", 0), event(0, 11, "A", "d1", "r", 1), event(0, 12, "A", "d1", "r", 2),
		eos,
		event(0, 14, "A", "d2", "r", 0), event(0, 15, "A", "d2", "r", 1),
		bad, reordered,
		event(0, 18, "A", "d2", "r", 5),  // seq continues from 4 but 4 was not a run member
		event(0, 20, "A", "d2", "r", 6),  // offset gap
		event(0, 21, "A", "d2", "r", 8),  // seq gap
		event(0, 22, "B", "d2", "r", 9),  // key change
		event(0, 23, "B", "d3", "r", 10), // date change
		event(0, 24, "B", "d3", "x", 11), // run_id change
		event(0, 25, "B", "d3", "x", 12),
	}
	got := frames(t, recs, 1000)
	want := []span{
		{'R', 10, 0, 3, "A", "d1", "r"},
		{kind: 'M', offset: 13, key: "A"},
		{'R', 14, 0, 2, "A", "d2", "r"},
		{kind: 'M', offset: 16, key: "A"},
		{kind: 'M', offset: 17, key: "A"},
		{'R', 18, 5, 1, "A", "d2", "r"},
		{'R', 20, 6, 1, "A", "d2", "r"},
		{'R', 21, 8, 1, "A", "d2", "r"},
		{'R', 22, 9, 1, "B", "d2", "r"},
		{'R', 23, 10, 1, "B", "d3", "r"},
		{'R', 24, 11, 2, "B", "d3", "x"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%v\nwant\n%v", got, want)
	}
}

func TestRunsBoundedByMaxRun(t *testing.T) {
	var recs []*kgo.Record
	for i := range 10 {
		recs = append(recs, event(3, int64(100+i), "K", "d", "r", uint64(i)))
	}
	got := frames(t, recs, 4)
	want := []span{{'R', 100, 0, 4, "K", "d", "r"}, {'R', 104, 4, 4, "K", "d", "r"}, {'R', 108, 8, 2, "K", "d", "r"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

// A ts_ns header that is not the record's own ts_ns makes the message raw: runs carry no ts_ns
// header, so only messages that can be rebuilt exactly from a run may join one.
func TestTsNsHeaderMustMatchTheRecord(t *testing.T) {
	odd := event(0, 1, "K", "d", "r", 1)
	binary.BigEndian.PutUint64(odd.Headers[0].Value, 1)
	recs := []*kgo.Record{event(0, 0, "K", "d", "r", 0), odd, event(0, 2, "K", "d", "r", 2)}
	got := frames(t, recs, 10)
	want := []span{{'R', 0, 0, 1, "K", "d", "r"}, {kind: 'M', offset: 1, key: "K"}, {'R', 2, 2, 1, "K", "d", "r"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestNullKeyIsRaw(t *testing.T) {
	r := event(0, 0, "K", "d", "r", 0)
	r.Key = nil
	got := frames(t, []*kgo.Record{r}, 10)
	if len(got) != 1 || got[0].kind != 'M' {
		t.Fatalf("%v", got)
	}
}

// Kafka's murmur2 test vectors (Java client, Utils.murmur2): the partitioner must map keys exactly
// like the Java client and librdkafka's murmur2_random, i.e. (murmur2(key) & 0x7fffffff) % n.
func TestPartitionerIsKafkaMurmur2(t *testing.T) {
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	tp := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for key, h := range cases {
		for _, n := range []int{1, 3, 6, 7, 1000} {
			want := int(uint32(h)&0x7fffffff) % n
			if got := tp.Partition(&kgo.Record{Key: []byte(key)}, n); got != want {
				t.Errorf("key %q, %d partitions: got %d, want %d", key, n, got, want)
			}
		}
	}
}

func TestBadFlagsExitNonZero(t *testing.T) {
	cases := [][]string{
		{},
		{"nope"},
		{"produce"},
		{"produce", "--brokers", "127.0.0.1:1"},
		{"produce", "--brokers", "127.0.0.1:1", "--topic", "t", "--linger-ms", "x"},
		{"produce", "--brokers", "127.0.0.1:1", "--topic", "t", "--max-buffered-records", "0"},
		{"consume", "--brokers", "127.0.0.1:1", "--topic", "t", "--group", "g"},
		{"consume", "--brokers", "127.0.0.1:1", "--topic", "t", "--group", "g", "--subscribe", "--assign"},
		{"consume", "--brokers", "127.0.0.1:1", "--topic", "t", "--assign"},
		{"consume", "--brokers", "127.0.0.1:1", "--topic", "t", "--group", "g", "--assign", "--reset", "middle"},
	}
	for _, args := range cases {
		var stdout, stderr bytes.Buffer
		code := run(args, strings.NewReader(""), &stdout, &stderr)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
		if stderr.Len() == 0 {
			t.Errorf("%v: no message on stderr", args)
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: wrote %q to stdout", args, stdout.String())
		}
	}
}

func TestProducerEOFGivesFinalStats(t *testing.T) {
	// No broker is needed for an empty session: stdin EOF flushes (nothing) and reports.
	var stdout, stderr bytes.Buffer
	code := run([]string{"produce", "--brokers", "127.0.0.1:1", "--topic", "t", "--log-level", "none"},
		strings.NewReader(""), &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr.String())
	}
	types, payloads := readAll(t, stdout.Bytes())
	if len(types) != 2 || !strings.Contains(string(payloads[0]), `"event":"ready"`) ||
		!strings.Contains(string(payloads[1]), `"event":"closed"`) {
		t.Fatalf("%q", payloads)
	}
}

func TestCommitMetadataIsStoredLikeLibrdkafka(t *testing.T) {
	if storedMetadata("") != "" || storedMetadata("itch1|x") != "itch1|x\x00" {
		t.Fatal("storedMetadata")
	}
	for _, m := range []string{"", "itch1|x", "a\x00"} {
		if readMetadata(storedMetadata(m)) != m {
			t.Fatalf("round trip of %q", m)
		}
	}
	if readMetadata("plain") != "plain" {
		t.Fatal("metadata without NUL (another client) must read unchanged")
	}
}
