// Sum- and min-segment trees for prioritized replay, exposed to Python with pybind11.
//
// These are the very binary trees of rlblocks.buffers' numpy fallback (every node exactly
// left + right, or min(left, right); the same comparisons and subtractions in the prefix-sum
// descent), stored differently: only every third level is kept, so that a node's 8
// descendants three levels down sit in one 64-byte cache line, and the two levels between
// are recomputed from them on the fly (with the same additions in the same order). A
// descent over 1M leaves then touches 7 cache lines instead of 20, and the values, hence the
// samples, are identical bit for bit. The tree is then a pure function of its
// leaves, bit for bit, and both implementations draw the same samples from the same
// uniforms. Only numpy buffers cross the boundary; nothing of libtorch is used.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

using Index = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using Values = py::array_t<double, py::array::c_style | py::array::forcecast>;

// Past this many elements a call releases the GIL; below, the release costs more than it saves.
constexpr int64_t kReleaseGil = 1 << 14;
// Past capacity / kRebuildFraction updated leaves, rebuilding every level is cheaper.
constexpr int64_t kRebuildFraction = 8;
// Children per node: 8 doubles, one 64-byte cache line.
constexpr int64_t kFanout = 8;

struct Sum {
  static constexpr double neutral() { return 0.0; }
  static double combine(double a, double b) { return a + b; }
  static constexpr const char* name = "SumSegmentTree";
};

struct Min {
  static constexpr double neutral() { return std::numeric_limits<double>::infinity(); }
  // np.minimum semantics for the values the trees hold (no NaN reaches them).
  static double combine(double a, double b) { return b < a ? b : a; }
  static constexpr const char* name = "MinSegmentTree";
};

// `pick ? a : b` without a branch (compilers often branch on a ternary of doubles, and a
// mispredicted branch also discards the loads in flight). Exact: it moves bits.
inline double select(bool pick, double a, double b) {
  uint64_t a_bits, b_bits;
  std::memcpy(&a_bits, &a, sizeof a);
  std::memcpy(&b_bits, &b, sizeof b);
  const uint64_t mask = uint64_t{0} - static_cast<uint64_t>(pick);
  const uint64_t bits = (a_bits & mask) | (b_bits & ~mask);
  double out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

inline void prefetch(const double* address) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(address);
#else
  (void)address;
#endif
}

// Accept any integer array (or Python int); reject floats instead of truncating them.
Index as_index(const py::handle& obj, const char* who) {
  py::array array = py::array::ensure(obj);
  if (!array) throw py::type_error(std::string(who) + ": indices must be an integer array");
  const char kind = array.dtype().kind();
  if (array.size() > 0 && kind != 'i' && kind != 'u') {
    throw py::type_error(std::string(who) + ": indices must be integers, got dtype kind '" +
                         std::string(1, kind) + "'");
  }
  return Index::ensure(array);
}

template <class Op>
class SegmentTree {
 public:
  explicit SegmentTree(int64_t capacity) : capacity_(capacity) {
    if (capacity < 1) {
      throw py::value_error(std::string(Op::name) + ": capacity must be >= 1, got " +
                            std::to_string(capacity));
    }
    // The binary tree the numpy fallback stores: 2^depth_ >= capacity leaves.
    while ((int64_t{1} << depth_) < capacity) ++depth_;
    // Stored here: heights 0, 3, 6, ... up to the first multiple of 3 at or above depth_.
    // Level m has ceil(capacity / 8^m) nodes, padded to a multiple of 8 (whole blocks).
    top_ = (depth_ + 2) / 3;
    int64_t count = capacity;
    int64_t total = 0;
    for (int64_t m = 0; m <= top_; ++m) {
      counts_.push_back(count);
      sizes_.push_back((count + kFanout - 1) / kFanout * kFanout);
      offsets_.push_back(total);
      total += sizes_.back();
      count = (count + kFanout - 1) / kFanout;
    }
    // One spare cache line so that every level starts on a 64-byte boundary.
    storage_.assign(static_cast<size_t>(total + kFanout), Op::neutral());
    const auto address = reinterpret_cast<std::uintptr_t>(storage_.data());
    align_ = static_cast<int64_t>((64 - address % 64) % 64 / sizeof(double));
  }

  int64_t capacity() const { return capacity_; }

  void update(const py::handle& index_obj, const py::handle& value_obj) {
    Index index = as_index(index_obj, Op::name);
    Values value = Values::ensure(value_obj);
    if (!value) throw py::type_error(std::string(Op::name) + ": values must be numbers");
    const int64_t n = index.size();
    const int64_t m = value.size();
    if (m != n && m != 1) {
      throw py::value_error(std::string(Op::name) + ".update: got " + std::to_string(m) +
                            " values for " + std::to_string(n) + " indices");
    }
    if (n == 0) return;
    const int64_t* idx = index.data();
    const double* val = value.data();
    check_range(idx, n);
    auto run = [&]() {
      double* leaves = level(0);
      for (int64_t i = 0; i < n; ++i) leaves[idx[i]] = val[m == 1 ? 0 : i];
      if (n * kRebuildFraction >= capacity_) {
        for (int64_t k = 1; k <= top_; ++k) {
          for (int64_t node = 0; node < counts_[k]; ++node) set_block_parent(k, node);
        }
        return;
      }
      // Level by level rather than leaf by leaf: the n parent updates of one level are
      // independent, so their cache misses overlap instead of queuing up.
      std::vector<int64_t> nodes(idx, idx + n);
      for (int64_t k = 1; k <= top_; ++k) {
        for (int64_t& node : nodes) {
          node /= kFanout;
          set_block_parent(k, node);
        }
      }
    };
    if (n >= kReleaseGil) {
      py::gil_scoped_release release;
      run();
    } else {
      run();
    }
  }

  py::array_t<double> get(const py::handle& index_obj) const {
    Index index = as_index(index_obj, Op::name);
    const int64_t n = index.size();
    check_range(index.data(), n);
    std::vector<py::ssize_t> shape(index.shape(), index.shape() + index.ndim());
    py::array_t<double> out(shape);
    double* o = out.mutable_data();
    const int64_t* idx = index.data();
    const double* leaves = level(0);
    for (int64_t i = 0; i < n; ++i) o[i] = leaves[idx[i]];
    return out;
  }

  py::array_t<double> leaves() const {
    py::array_t<double> out(capacity_);
    const double* leaves = level(0);
    std::copy(leaves, leaves + capacity_, out.mutable_data());
    return out;
  }

  // The binary range query of the numpy fallback, node for node, in the same order.
  double query(int64_t start, int64_t end) const {
    if (start < 0 || end > capacity_ || start > end) {
      throw py::index_error(std::string(Op::name) + ".query: range [" + std::to_string(start) +
                            ", " + std::to_string(end) + ") is not inside [0, " +
                            std::to_string(capacity_) + ")");
    }
    // Padding leaves hold the neutral element, so the root covers exactly the full range.
    if (start == 0 && end == capacity_) return root();
    double result = Op::neutral();
    int64_t lo = start;
    int64_t hi = end;
    for (int64_t height = 0; lo < hi; ++height) {
      if (lo & 1) result = Op::combine(result, binary_node(height, lo++));
      if (hi & 1) result = Op::combine(result, binary_node(height, --hi));
      lo >>= 1;
      hi >>= 1;
    }
    return result;
  }

  double total() const { return root(); }

  // For each p: the smallest i with sum(leaf[:i + 1]) > p. Never enters a zero subtree, so
  // values at or past total() give the last non-zero leaf.
  py::array_t<int64_t> find_prefixsum_idx(const py::handle& prefix_obj) const {
    Values prefix = Values::ensure(prefix_obj);
    if (!prefix) throw py::type_error("SumSegmentTree.find_prefixsum_idx: prefixes must be numbers");
    const int64_t n = prefix.size();
    std::vector<py::ssize_t> shape(prefix.shape(), prefix.shape() + prefix.ndim());
    py::array_t<int64_t> out(shape);
    int64_t* o = out.mutable_data();
    const double* pre = prefix.data();
    auto run = [&]() {
      // All descents advance one stored level at a time, and the three binary steps of a
      // level are three passes over the descents: each pass is a short chain per descent,
      // independent of the others, so the processor overlaps them (and their cache misses).
      std::vector<double> p(pre, pre + n);
      std::vector<int64_t> node(static_cast<size_t>(n), 0);
      std::vector<int64_t> at(static_cast<size_t>(n));
      std::vector<double> left(static_cast<size_t>(n));
      std::vector<double> right(static_cast<size_t>(n));
      for (int64_t k = top_; k >= 1; --k) {
        const double* below = level(k - 1);
        const double* further = k >= 2 ? level(k - 2) : nullptr;
        for (int64_t i = 0; i < n; ++i) {  // step 1: which half of the block
          const double* c = below + node[i] * kFanout;
          const double pair0 = c[0] + c[1], pair1 = c[2] + c[3];
          const double pair2 = c[4] + c[5], pair3 = c[6] + c[7];
          const bool half = step(pair0 + pair1, pair2 + pair3, p[i]);
          left[i] = select(half, pair2, pair0);
          right[i] = select(half, pair3, pair1);
          at[i] = 4 * half;
        }
        for (int64_t i = 0; i < n; ++i) at[i] += 2 * step(left[i], right[i], p[i]);  // pair
        for (int64_t i = 0; i < n; ++i) {  // step 3: which child
          const double* c = below + node[i] * kFanout + at[i];
          node[i] = node[i] * kFanout + at[i] + step(c[0], c[1], p[i]);
          if (further != nullptr) prefetch(further + node[i] * kFanout);
        }
      }
      for (int64_t i = 0; i < n; ++i) o[i] = node[i];
    };
    if (n >= kReleaseGil) {
      py::gil_scoped_release release;
      run();
    } else {
      run();
    }
    return out;
  }

 private:
  double* level(int64_t k) { return storage_.data() + align_ + offsets_[k]; }
  const double* level(int64_t k) const { return storage_.data() + align_ + offsets_[k]; }
  double root() const { return level(top_)[0]; }

  // A block's node is its binary subtree's root: pairs, then quads, then the whole block.
  static double combine_block(const double* c) {
    return Op::combine(Op::combine(Op::combine(c[0], c[1]), Op::combine(c[2], c[3])),
                       Op::combine(Op::combine(c[4], c[5]), Op::combine(c[6], c[7])));
  }

  void set_block_parent(int64_t k, int64_t node) {
    level(k)[node] = combine_block(level(k - 1) + node * kFanout);
  }

  // One binary step, with the fallback's rule: go right iff left <= p and right > 0, then
  // p -= left. Branch-free (a mispredicted branch would also discard the loads in flight):
  // p - 1.0 * left == p - left and p - 0.0 * left == p for the finite, non-negative sums here.
  static int64_t step(double left, double right, double& p) {
    const bool go_right = (left <= p) & (right > 0);
    p -= static_cast<double>(go_right) * left;
    return go_right;
  }

  // The value of the binary tree's node `index` at `height` above the leaves.
  double binary_node(int64_t height, int64_t index) const {
    if (height % 3 == 0) {
      const int64_t k = height / 3;
      return index < sizes_[k] ? level(k)[index] : Op::neutral();
    }
    return Op::combine(binary_node(height - 1, 2 * index), binary_node(height - 1, 2 * index + 1));
  }

  void check_range(const int64_t* idx, int64_t n) const {
    for (int64_t i = 0; i < n; ++i) {
      if (idx[i] < 0 || idx[i] >= capacity_) {
        throw py::index_error(std::string(Op::name) + ": index " + std::to_string(idx[i]) +
                              " is out of range; valid indices are 0 to " +
                              std::to_string(capacity_ - 1) + " (size " +
                              std::to_string(capacity_) + ")");
      }
    }
  }

  int64_t capacity_;
  int64_t depth_ = 0;  // of the equivalent binary tree
  int64_t top_ = 0;    // stored levels above the leaves
  int64_t align_ = 0;
  std::vector<int64_t> counts_;
  std::vector<int64_t> sizes_;
  std::vector<int64_t> offsets_;
  std::vector<double> storage_;
};

template <class Op>
void bind_common(py::class_<SegmentTree<Op>>& cls) {
  using Tree = SegmentTree<Op>;
  cls.def(py::init<int64_t>(), py::arg("capacity"))
      .def_property_readonly("capacity", &Tree::capacity, "Number of leaves.")
      .def("update", &Tree::update, py::arg("index"), py::arg("value"),
           "Set leaf[index[i]] = value[i] for all i (a later duplicate index wins).")
      .def("__getitem__", &Tree::get, py::arg("index"), "Leaf values at index (a copy).")
      .def("leaves", &Tree::leaves, "A copy of all capacity leaves.")
      .def("query", &Tree::query, py::arg("start"), py::arg("end"),
           "Combine leaves [start, end): their sum or their minimum.")
      .def("__repr__",
           [](const Tree& t) {
             return std::string(Op::name) + "(capacity=" + std::to_string(t.capacity()) + ")";
           })
      .def(py::pickle(
          [](const Tree& t) { return py::make_tuple(t.capacity(), t.leaves()); },
          [](const py::tuple& state) {
            if (state.size() != 2) throw std::runtime_error("invalid segment-tree state");
            Tree tree(state[0].cast<int64_t>());
            Values leaves = Values::ensure(state[1]);
            if (!leaves || leaves.size() != tree.capacity()) {
              throw std::runtime_error("invalid segment-tree state: wrong number of leaves");
            }
            py::array_t<int64_t> positions(tree.capacity());
            int64_t* p = positions.mutable_data();
            for (int64_t i = 0; i < tree.capacity(); ++i) p[i] = i;
            tree.update(positions, leaves);
            return tree;
          }));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Compiled sum/min segment trees of rlblocks-kernel (numpy buffers only).";
  m.attr("__version__") = RLBLOCKS_KERNEL_VERSION;

  py::class_<SegmentTree<Sum>> sum_tree(m, "SumSegmentTree",
                                        "Sum-tree over capacity non-negative leaves, zero at first.");
  bind_common(sum_tree);
  sum_tree.def("total", &SegmentTree<Sum>::total, "The sum of all leaves.")
      .def("find_prefixsum_idx", &SegmentTree<Sum>::find_prefixsum_idx, py::arg("prefix"),
           "For each p, the smallest i with sum(leaf[:i + 1]) > p.");

  py::class_<SegmentTree<Min>> min_tree(m, "MinSegmentTree",
                                        "Min-tree over capacity leaves, inf at first.");
  bind_common(min_tree);
}
