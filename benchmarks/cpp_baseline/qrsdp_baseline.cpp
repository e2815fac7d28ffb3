// A straightforward C++17 implementation of the QRSDP SimpleImbalance session loop.
//
// Purpose: a baseline to compare the numba engine (qrsdp_sim/engine/kernel.py, book.py,
// models/simple_imbalance.py) against. It simulates the *same model* with the same defaults
// and writes the same `.qrsdp` file (64-byte header, 4,096-record chunks compressed with
// LZ4 at acceleration 4, index footer, fsync, atomic rename), so the Python reader and
// book replay can check its output. It is deliberately written the way an engineer would
// write it without profiling: std::map of price levels holding std::deque FIFO queues,
// std::mt19937_64 with <random> distributions, std::exp per event, records pushed into a
// std::vector and written with fwrite. It is not bit-identical to the Python engine (a
// different generator and a different order of draws), only statistically equivalent.
//
// Usage: qrsdp_baseline [--seed N] [--seconds S] [--repeat R] [--out FILE | --sink none]
// Prints one JSON line per session (events, wall and thread-CPU seconds, counts by type ...).

#include <lz4.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .qrsdp format is little-endian; structs are written as is");

namespace {

// ---------------------------------------------------------------------------------------------
// Parameters: SessionConfig and SimpleImbalance defaults of the Python engine.
struct Params {
  int32_t p0_ticks = 10000;
  int levels = 5;          // K: window width per side
  int initial_spread = 2;  // ticks
  int depth = 5;           // D: orders placed on each tick of the opening book and of a refill
  uint32_t tick_size = 100;
  double session_seconds = 23400.0;
  uint64_t market_open_ns = 34200ULL * 1000000000ULL;  // 09:30
  uint32_t chunk_capacity = 4096;
  // SimpleImbalance
  double base_L = 20.0;
  double base_C = 0.5;
  double base_M = 15.0;
  double imbalance_sens = 1.0;
  double cancel_sens = 1.0;
  double epsilon_exec = 0.5;
  double spread_sens = 0.4;
  double add_decay_alpha = 0.5;
  double improve_per_tick = 0.5;
};

constexpr double kRateFloor = 1e-9;

// ---------------------------------------------------------------------------------------------
// The 26-byte record (qrsdp_sim/records.py RECORD_DTYPE), packed.
#pragma pack(push, 1)
struct Record {
  uint64_t ts_ns;
  uint8_t type;
  uint8_t side;
  int32_t price_ticks;
  uint32_t qty;
  uint64_t order_id;
};
#pragma pack(pop)
static_assert(sizeof(Record) == 26, "record must be 26 bytes");

enum EventType : uint8_t { ADD_BID = 0, ADD_ASK = 1, CANCEL_BID = 2, CANCEL_ASK = 3, EXECUTE_BUY = 4, EXECUTE_SELL = 5 };

// ---------------------------------------------------------------------------------------------
// `.qrsdp` writer (qrsdp_sim/eventlog/writer.py BinaryFileSink, format 1.0).
#pragma pack(push, 1)
struct FileHeader {  // struct "<8sHHIQiIIIIIIIQ"
  char magic[8];
  uint16_t version_major, version_minor;
  uint32_t record_size;
  uint64_t seed;
  int32_t p0_ticks;
  uint32_t tick_size, session_seconds, levels_per_side, initial_spread_ticks, initial_depth, chunk_capacity;
  uint32_t header_flags;
  uint64_t reserved;
};
struct ChunkHeader {  // "<IIIIQQ"
  uint32_t uncompressed_size, compressed_size, record_count, chunk_flags;
  uint64_t first_ts_ns, last_ts_ns;
};
struct IndexEntry {  // "<QQQII"
  uint64_t file_offset, first_ts_ns, last_ts_ns;
  uint32_t record_count, reserved;
};
struct IndexTail {  // "<I4sQ"
  uint32_t count;
  char magic[4];
  uint64_t index_start;
};
#pragma pack(pop)
static_assert(sizeof(FileHeader) == 64 && sizeof(ChunkHeader) == 32, "format sizes");
static_assert(sizeof(IndexEntry) == 32 && sizeof(IndexTail) == 16, "format sizes");
constexpr long kHeaderFlagsOffset = offsetof(FileHeader, header_flags);
static_assert(kHeaderFlagsOffset == 52, "header_flags offset");
constexpr int kLz4Acceleration = 4;  // as LZ4_ACCELERATION in writer.py

// Records are appended one at a time; every `chunk_capacity` records are compressed and written.
// With an empty path the writer is a null sink (chunks are dropped): the loop without file I/O.
class QrsdpWriter {
 public:
  QrsdpWriter(const std::string& path, const Params& p, uint64_t seed) : path_(path), capacity_(p.chunk_capacity) {
    chunk_.reserve(capacity_);
    if (path_.empty()) return;
    tmp_path_ = partial_path(path_);
    fh_ = std::fopen(tmp_path_.c_str(), "wb");
    if (!fh_) throw std::runtime_error("cannot open " + tmp_path_);
    FileHeader h{};
    std::memcpy(h.magic, "QRSDPLOG", 8);
    h.version_major = 1;
    h.version_minor = 0;
    h.record_size = sizeof(Record);
    h.seed = seed;
    h.p0_ticks = p.p0_ticks;
    h.tick_size = p.tick_size;
    h.session_seconds = static_cast<uint32_t>(p.session_seconds);
    h.levels_per_side = p.levels;
    h.initial_spread_ticks = p.initial_spread;
    h.initial_depth = p.depth;
    h.chunk_capacity = capacity_;
    h.header_flags = 0;  // HAS_INDEX is set on close, once the index is written
    std::fwrite(&h, sizeof h, 1, fh_);
    offset_ = sizeof h;
  }
  QrsdpWriter(const QrsdpWriter&) = delete;
  QrsdpWriter& operator=(const QrsdpWriter&) = delete;
  ~QrsdpWriter() {
    if (fh_) {  // not closed: abandon the partial file
      std::fclose(fh_);
      std::remove(tmp_path_.c_str());
    }
  }

  void append(const Record& r) {
    chunk_.push_back(r);
    if (chunk_.size() == capacity_) write_chunk();
  }

  // Last (short) chunk, index, HAS_INDEX flag, fsync, rename into place, fsync the directory.
  void close() {
    if (!chunk_.empty()) write_chunk();
    if (!fh_) return;
    const uint64_t index_start = offset_;
    std::fwrite(index_.data(), sizeof(IndexEntry), index_.size(), fh_);
    IndexTail tail{static_cast<uint32_t>(index_.size()), {'Q', 'I', 'D', 'X'}, index_start};
    std::fwrite(&tail, sizeof tail, 1, fh_);
    const uint32_t has_index = 1;
    std::fseek(fh_, kHeaderFlagsOffset, SEEK_SET);
    std::fwrite(&has_index, sizeof has_index, 1, fh_);
    if (std::fflush(fh_) != 0 || fsync(fileno(fh_)) != 0) throw std::runtime_error("cannot write " + tmp_path_);
    std::fclose(fh_);
    fh_ = nullptr;
    if (std::rename(tmp_path_.c_str(), path_.c_str()) != 0) throw std::runtime_error("cannot rename to " + path_);
    const std::string dir = path_.find('/') == std::string::npos ? "." : path_.substr(0, path_.rfind('/') + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY);
    if (dfd >= 0) {
      fsync(dfd);
      ::close(dfd);
    }
  }

  uint64_t file_bytes() const { return offset_ + index_.size() * sizeof(IndexEntry) + sizeof(IndexTail); }

 private:
  static std::string partial_path(const std::string& path) {
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." + path + ".partial"
                                      : path.substr(0, slash + 1) + "." + path.substr(slash + 1) + ".partial";
  }

  void write_chunk() {
    if (fh_) {
      const int raw_size = static_cast<int>(chunk_.size() * sizeof(Record));
      compressed_.resize(LZ4_compressBound(raw_size));
      const int n = LZ4_compress_fast(reinterpret_cast<const char*>(chunk_.data()), compressed_.data(), raw_size,
                                      static_cast<int>(compressed_.size()), kLz4Acceleration);
      if (n <= 0) throw std::runtime_error("LZ4 compression failed");
      const ChunkHeader ch{static_cast<uint32_t>(raw_size), static_cast<uint32_t>(n),
                           static_cast<uint32_t>(chunk_.size()), 0, chunk_.front().ts_ns, chunk_.back().ts_ns};
      std::fwrite(&ch, sizeof ch, 1, fh_);
      std::fwrite(compressed_.data(), 1, n, fh_);
      index_.push_back({offset_, ch.first_ts_ns, ch.last_ts_ns, ch.record_count, 0});
      offset_ += sizeof ch + n;
    }
    chunk_.clear();
  }

  std::string path_, tmp_path_;
  uint32_t capacity_;
  std::FILE* fh_ = nullptr;
  uint64_t offset_ = 0;
  std::vector<Record> chunk_;
  std::vector<char> compressed_;
  std::vector<IndexEntry> index_;
};

// ---------------------------------------------------------------------------------------------
// The book: per side, a sorted map price -> level, each level a FIFO queue of orders.
struct Order {
  uint64_t id;
  uint32_t qty;
};

struct Level {
  std::deque<Order> orders;  // front = oldest
  int64_t qty = 0;           // total resting quantity
};

// Orders prices "outward" from the spread (descending for bids, ascending for asks), so that
// begin() is the best level and iterating goes away from the spread on either side.
template <int Dir>
struct Outward {
  bool operator()(int32_t a, int32_t b) const { return Dir * a < Dir * b; }
};

// Dir = -1: bids (outward = lower prices), +1: asks. Only non-empty levels are kept, and no
// populated level ever lies between a side's best and the spread, so the best is begin().
template <int Dir>
struct BookSide {
  static constexpr int kDir = Dir;
  static constexpr uint8_t kSide = Dir < 0 ? 0 : 1;  // Side.BID / Side.ASK
  std::map<int32_t, Level, Outward<Dir>> levels;
  int32_t best() const { return levels.begin()->first; }
};

// ---------------------------------------------------------------------------------------------
class Simulator {
 public:
  Simulator(const Params& p, uint64_t seed, QrsdpWriter& out) : p_(p), rng_(seed), out_(out) {
    // add level k (0 = at the best) with weight exp(-alpha k), k < K
    std::vector<double> w(p.levels);
    for (int k = 0; k < p.levels; ++k) w[k] = std::exp(-p.add_decay_alpha * k);
    add_level_ = std::discrete_distribution<int>(w.begin(), w.end());
  }

  void run() {
    open_book();
    double t = 0.0;
    for (;;) {
      // -- SimpleImbalance rates for the current book, indexed by EventType
      const int32_t bb = bids_.best(), ba = asks_.best();
      const double qb = static_cast<double>(bids_.levels.begin()->second.qty);
      const double qa = static_cast<double>(asks_.levels.begin()->second.qty);
      const double imb = (qb - qa) / (qb + qa + 1e-9);
      const double a = std::exp(p_.spread_sens * (ba - bb - 2));  // spread multiplier of adds ...
      const double e = 1.0 / a;                                    // ... and its inverse for executions
      const double si = p_.imbalance_sens * imb;
      const double cs = p_.base_C * p_.cancel_sens;
      std::array<double, 6> r{
          std::max(p_.base_L * (1.0 - si) * a, kRateFloor),
          std::max(p_.base_L * (1.0 + si) * a, kRateFloor),
          std::max(cs * static_cast<double>(window_qty(bids_)), kRateFloor),
          std::max(cs * static_cast<double>(window_qty(asks_)), kRateFloor),
          std::max(p_.base_M * (p_.epsilon_exec + std::max(-si, 0.0)) * e, kRateFloor),
          std::max(p_.base_M * (p_.epsilon_exec + std::max(si, 0.0)) * e, kRateFloor),
      };
      const double total = r[0] + r[1] + r[2] + r[3] + r[4] + r[5];

      // -- next event time (competing exponential clocks = one clock at the total rate)
      const double tc = t + std::exponential_distribution<double>(total)(rng_);
      if (tc >= p_.session_seconds) break;
      t = tc;
      ts_ = p_.market_open_ns + static_cast<uint64_t>(static_cast<int64_t>(t * 1e9));

      // -- which event, in proportion to its rate
      const double u = unif_(rng_) * total;
      int type = 0;
      double acc = r[0];
      while (type < 5 && acc <= u) acc += r[++type];

      switch (type) {
        case ADD_BID: add(bids_); break;
        case ADD_ASK: add(asks_); break;
        case CANCEL_BID: cancel(bids_); break;
        case CANCEL_ASK: cancel(asks_); break;
        case EXECUTE_BUY: execute(asks_); break;   // a buy takes the oldest order at the best ask
        case EXECUTE_SELL: execute(bids_); break;  // a sell takes the oldest order at the best bid
      }
    }
  }

  std::array<uint64_t, 6> counts{};  // records by EventType
  uint64_t events = 0;               // records written (opening book and refills included)
  int32_t best_bid() const { return bids_.best(); }
  int32_t best_ask() const { return asks_.best(); }

 private:
  void emit(uint8_t type, uint8_t side, int32_t price, uint32_t qty, uint64_t id) {
    out_.append(Record{ts_, type, side, price, qty, id});
    ++counts[type];
    ++events;
  }

  // A new order of qty 1 at the tail of `price`'s queue, with its ADD record.
  template <class Side>
  void push_order(Side& b, int32_t price) {
    Level& lv = b.levels[price];
    const uint64_t id = next_id_++;
    lv.orders.push_back({id, 1});
    lv.qty += 1;
    emit(ADD_BID + Side::kSide, Side::kSide, price, 1, id);
  }

  template <class Side>
  void refill(Side& b, int32_t price) {
    for (int i = 0; i < p_.depth; ++i) push_order(b, price);
  }

  // D orders on each of the K ticks of both windows at the open: bids from the best outward, then asks.
  void open_book() {
    ts_ = p_.market_open_ns;
    const int32_t bb = p_.p0_ticks - p_.initial_spread / 2;
    for (int k = 0; k < p_.levels; ++k) refill(bids_, bb - k);
    for (int k = 0; k < p_.levels; ++k) refill(asks_, bb + p_.initial_spread + k);
  }

  // Resting quantity over the K ticks starting at the best (the model's window, empty ticks count 0).
  template <class Side>
  int64_t window_qty(const Side& b) const {
    const int32_t far = b.best() + Side::kDir * (p_.levels - 1);
    int64_t tot = 0;
    for (auto it = b.levels.begin(); it != b.levels.end() && Side::kDir * (it->first - far) <= 0; ++it)
      tot += it->second.qty;
    return tot;
  }

  // Add: with spread s > 1, improve the best by one tick with probability min(1, (s - 1) * improve);
  // otherwise join level k of the window, k drawn with weight exp(-alpha k).
  template <class Side>
  void add(Side& b) {
    const int spread = asks_.best() - bids_.best();
    if (spread > 1 && unif_(rng_) < std::min(1.0, (spread - 1) * p_.improve_per_tick)) {
      push_order(b, b.best() - Side::kDir);
    } else {
      push_order(b, b.best() + Side::kDir * add_level_(rng_));
    }
  }

  // Cancel: a tick of the window with weight = its resting quantity, then one of its orders uniformly.
  template <class Side>
  void cancel(Side& b) {
    const int64_t target = std::uniform_int_distribution<int64_t>(0, window_qty(b) - 1)(rng_);
    auto it = b.levels.begin();
    for (int64_t cum = it->second.qty; cum <= target; cum += it->second.qty) ++it;
    Level& lv = it->second;
    const size_t j = std::uniform_int_distribution<size_t>(0, lv.orders.size() - 1)(rng_);
    const auto order = lv.orders.begin() + static_cast<std::ptrdiff_t>(j);
    emit(CANCEL_BID + Side::kSide, Side::kSide, it->first, order->qty, order->id);
    lv.qty -= order->qty;
    lv.orders.erase(order);
    if (lv.orders.empty()) remove_level(b, it);
  }

  // Execution of one share against the oldest order at the best of the resting side `b`.
  template <class Side>
  void execute(Side& b) {
    const auto it = b.levels.begin();
    Level& lv = it->second;
    Order& o = lv.orders.front();
    emit(EXECUTE_SELL - Side::kSide, Side::kSide, it->first, 1, o.id);
    lv.qty -= 1;
    if (o.qty > 1) {
      o.qty -= 1;  // a partially filled order keeps its place
    } else {
      lv.orders.pop_front();
      if (lv.orders.empty()) remove_level(b, it);
    }
  }

  template <class Side>
  void remove_level(Side& b, typename decltype(Side::levels)::iterator it) {
    const bool was_best = it == b.levels.begin();
    const int32_t price = it->first;
    b.levels.erase(it);
    if (was_best) shift_after_depletion(b, price);
  }

  // The best tick `old` just emptied (book.py shift_after_depletion): the best moves outward to the
  // next populated tick; every empty tick of the new window beyond the old window's far end gets D
  // orders, nearest first. If the side is empty, the best moves one tick out and the whole window is refilled.
  template <class Side>
  void shift_after_depletion(Side& b, int32_t old) {
    constexpr int d = Side::kDir;
    const bool found = !b.levels.empty();
    const int32_t p = found ? b.best() : old + d;
    const int32_t old_far = old + d * (p_.levels - 1);
    for (int k = 0; k < p_.levels; ++k) {
      const int32_t q = p + d * k;
      if ((!found || d * (q - old_far) > 0) && b.levels.find(q) == b.levels.end()) refill(b, q);
    }
  }

  const Params& p_;
  std::mt19937_64 rng_;
  std::uniform_real_distribution<double> unif_{0.0, 1.0};
  std::discrete_distribution<int> add_level_;
  BookSide<-1> bids_;
  BookSide<+1> asks_;
  uint64_t next_id_ = 1;
  uint64_t ts_ = 0;
  QrsdpWriter& out_;
};

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

[[noreturn]] void usage() {
  std::fprintf(stderr, "usage: qrsdp_baseline [--seed N] [--seconds S] [--repeat R] [--out FILE | --sink none]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Params p;
  uint64_t seed = 1;
  int repeat = 1;
  std::string out = "baseline.qrsdp";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) usage();
    const std::string val = argv[++i];
    if (arg == "--seed") seed = std::stoull(val);
    else if (arg == "--seconds") p.session_seconds = std::stod(val);
    else if (arg == "--repeat") repeat = std::stoi(val);
    else if (arg == "--out") out = val;
    else if (arg == "--sink" && val == "none") out.clear();
    else usage();
  }
  try {
    for (int rep = 0; rep < repeat; ++rep) {
      if (!out.empty()) std::remove(out.c_str());  // outside the timed span (rename would unlink it inside)
      const auto w0 = std::chrono::steady_clock::now();
      const double c0 = thread_cpu_seconds();
      QrsdpWriter writer(out, p, seed);
      Simulator sim(p, seed, writer);
      sim.run();
      writer.close();
      const double cpu = thread_cpu_seconds() - c0;
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
      std::printf(
          "{\"seed\": %llu, \"events\": %llu, \"wall\": %.6f, \"cpu\": %.6f, \"counts\": [%llu, %llu, %llu, %llu, "
          "%llu, %llu], \"bytes\": %llu, \"best_bid\": %d, \"best_ask\": %d}\n",
          static_cast<unsigned long long>(seed), static_cast<unsigned long long>(sim.events), wall, cpu,
          static_cast<unsigned long long>(sim.counts[0]), static_cast<unsigned long long>(sim.counts[1]),
          static_cast<unsigned long long>(sim.counts[2]), static_cast<unsigned long long>(sim.counts[3]),
          static_cast<unsigned long long>(sim.counts[4]), static_cast<unsigned long long>(sim.counts[5]),
          static_cast<unsigned long long>(out.empty() ? 0 : writer.file_bytes()), sim.best_bid(),
          sim.best_ask());
      std::fflush(stdout);
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "error: %s\n", ex.what());
    return 1;
  }
  return 0;
}
