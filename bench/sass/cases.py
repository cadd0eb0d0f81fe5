"""The AlexNet cases: which kernel instantiation each launches, its parameter struct
(packed with the C++ ABI layout), its pointer arguments and its launch size.

All per-op knowledge of the kernels' parameter structs and launchers lives here, so a
change to a struct or an item mapping is ported in this one file.
"""

import math
import re
import struct
from dataclasses import dataclass

from .machine import THREADS, WARP
from .memory import pointer

# AlexNet's LRN (paper: k = 2, n = 5, alpha = 1e-4, beta = 0.75; scale = alpha / size).
LRN_SIZE, LRN_SCALE, LRN_BETA, LRN_K = 5, 1e-4 / 5, 0.75, 2.0
SPAN = LRN_SIZE - 1  # make_window (lrn.h): pre = 2, post = 2, clamped to C - 1
POOL_K, POOL_S = 3, 2
LRN_GROUPS = 2
SHAPES = [(128, 96, 55, 55), (128, 256, 27, 27)]
DTYPES = {"fp32": ("float", 4), "bf16": ("c10::BFloat16", 2)}
LAYOUTS = ("nchw", "nhwc")
CHANNEL_RUN = 32  # lrn::sweep::kChannelRun (lrn_sweep.h, make_items)
BACKWARD_CHANNEL_RUN = 64  # lrn::sweep::kBackwardChannelRun (make_backward_items: even runs of at most 64)
RELU_LRN_MAX_POOL2D_CHANNEL_RUN, RELU_LRN_MAX_POOL2D_LONG_GROUP_RUN = (
    64,
    32,
)  # relu_lrn_max_pool2d::sweep::kChannelRun, kLongGroupRun


def relu_lrn_max_pool2d_backward_run(cg):
    """backward_run (relu_lrn_max_pool2d_sweep.h): one run a group of up to 64 channels,
    else even runs of at most 32."""
    if cg <= RELU_LRN_MAX_POOL2D_CHANNEL_RUN:
        return cg
    runs = -(-cg // RELU_LRN_MAX_POOL2D_LONG_GROUP_RUN)
    return -(-cg // runs)


POOL_CHANNELS, POOL_ROWS = 4, 13  # stage forward NCHW items: kPoolChannels, kPoolRows (sweep header)

# The kernels' pointer arguments, in order (the names are the tensors of reference.py).
POINTER_ARGS = {
    ("lrn", "fwd"): ("x", "y"),  # lrn_forward_sweep_kernel(x, y, ...)
    ("lrn", "bwd"): ("dy", "x", "dx"),  # lrn_backward_sweep_kernel(dy, x, dx, ...)
    ("max_pool2d", "fwd"): ("x", "y", "argmax"),  # Forward3s2{in, out, argmax, ...}
    ("max_pool2d", "bwd"): ("dy", "argmax", "dx"),  # Backward3s2{grad_out, argmax, grad_in, ...}
    ("relu_lrn_max_pool2d", "fwd"): ("x", "y", "argmax"),  # forward_sweep_kernel(x, out, am, ...)
    ("relu_lrn_max_pool2d", "bwd"): ("dy", "argmax", "x", "dx"),  # backward_{sweep,lanes}_kernel(dy, am, x, dx, ...)
}
OUTPUTS = {"fwd": ("y", "argmax"), "bwd": ("dx",)}


def pointers(n):
    return [pointer(k) for k in range(n)]


def outputs(case):
    """The tensors the kernel writes (LRN forward: y only)."""
    return tuple(t for t in OUTPUTS[case.direction] if t in POINTER_ARGS[(case.op, case.direction)])


def launch_threads(case):
    """Threads the launcher starts with work (blocks = ceil(threads / 256)): one per item,
    except the channels-last stage backward, whose warps own 30 items each (32 where
    they hold whole LRN groups: lane_items)
    (backward_lane_warps(it) * kWarpLanes in relu_lrn_max_pool2d_cuda.cu)."""
    if case.op == "lrn":
        return lrn_items(case)["count"]
    if case.op == "max_pool2d":
        return max_pool2d_grid(case)[0]
    count = relu_lrn_max_pool2d_items(case)["count"]
    if case.direction == "bwd" and case.cl:
        return -(-count // lane_items(case)) * WARP
    return count


def blocks(case):
    return -(-launch_threads(case) // THREADS)


class Packer:
    """Kernel parameters, laid out as the C++ ABI lays out the argument struct."""

    def __init__(self):
        self.buf = bytearray()

    def _put(self, fmt, value, align):
        while len(self.buf) % align:
            self.buf.append(0)
        self.buf += struct.pack("<" + fmt, value)

    def ptr(self, v):
        self._put("Q", v, 8)

    def i64(self, v):
        self._put("q", v, 8)

    def i32(self, v):
        self._put("i", v, 4)

    def f32(self, v):
        self._put("f", v, 4)

    def u8(self, v):
        self._put("B", v, 1)

    def struct_(self, fill, align):
        while len(self.buf) % align:
            self.buf.append(0)
        fill(self)
        while len(self.buf) % align:
            self.buf.append(0)


@dataclass
class Case:
    op: str  # 'lrn', 'max_pool2d', 'relu_lrn_max_pool2d'
    direction: str  # 'fwd', 'bwd'
    dtype: str
    layout: str
    shape: tuple

    @property
    def name(self):
        return f"{self.op}_{self.direction}"

    @property
    def esize(self):
        return DTYPES[self.dtype][1]

    @property
    def cl(self):
        return self.layout == "nhwc"

    @property
    def pooled(self):
        n, c, h, w = self.shape
        return (n, c, (h - POOL_K) // POOL_S + 1, (w - POOL_K) // POOL_S + 1)


def numel(shape):
    return math.prod(shape)


def lrn_vector(case):
    """lrn_sweep.h max_vector / vector_width: 16 bytes channels-last, at most 4 channels-first,
    and only when the contiguous dim (channels or pixels) is a multiple of it."""
    n, c, h, w = case.shape
    vec = 16 // case.esize if case.cl else min(16 // case.esize, 4)
    return vec if (c if case.cl else h * w) % vec == 0 else 1


def relu_lrn_max_pool2d_vector(case):
    """relu_lrn_max_pool2d_sweep.h vector_width: 1 channels-first, 16 bytes channels-last."""
    return 16 // case.esize if case.cl else 1


def kernel_pattern(case):
    """Demangled-name regex of the instantiation the launcher picks for this case."""
    t = re.escape(DTYPES[case.dtype][0])
    cl = "true" if case.cl else "false"
    if case.op == "lrn":
        # lrn_cuda.cu: lrn_{forward,backward}_sweep_kernel<SPAN, V, CL, scalar_t>
        which = "forward" if case.direction == "fwd" else "backward"
        return rf"lrn::.*lrn_{which}_sweep_kernel<{SPAN}, {lrn_vector(case)}, {cl}, {t}, float>\("
    if case.op == "max_pool2d":
        # max_pool2d_cuda.cu: forward_3s2_kernel<scalar_t, argmax_t, CL, kLanes> and
        # backward_3s2_kernel<scalar_t, argmax_t, CL, kLanes, kBlocks>, the 3/2 kernels (is_3s2,
        # fits_int32); uint8 argmax (argmax_dtype: no return_indices, 3x3 <= 256).
        if case.direction == "fwd":
            return rf"max_pool2d::.*::forward_3s2_kernel<{t}, unsigned char, {cl}, {max_pool2d_lanes(case)}>\("
        return (
            rf"max_pool2d::.*::backward_3s2_kernel<{t}, unsigned char, {cl}, {max_pool2d_lanes(case)}, "
            rf"{max_pool2d_blocks(case)}>\("
        )
    which = "forward" if case.direction == "fwd" else "backward"
    if case.direction == "bwd" and case.cl:
        # relu_lrn_max_pool2d_cuda.cu: backward_lanes_kernel<SPAN, V, GROUPS, scalar_t>, warps
        # sharing LRN halos (relu_lrn_max_pool2d_sweep.h backward_lanes; GROUPS: lane_items)
        groups = "true" if lane_items(case) == WARP else "false"
        return rf"relu_lrn_max_pool2d::.*::backward_lanes_kernel<{SPAN}, {relu_lrn_max_pool2d_vector(case)}, {groups}, {t}, float>\("
    # relu_lrn_max_pool2d_cuda.cu: {forward,backward}_sweep_kernel<SPAN, V, CL, scalar_t>
    return rf"relu_lrn_max_pool2d::.*::{which}_sweep_kernel<{SPAN}, {relu_lrn_max_pool2d_vector(case)}, {cl}, {t}, float>\("


def cubin_stem(case):
    return {"lrn": "lrn_cuda", "max_pool2d": "max_pool2d_cuda", "relu_lrn_max_pool2d": "relu_lrn_max_pool2d_cuda"}[
        case.op
    ]


# ---- vector classes (lrn_sweep.h VectorClasses / make_vector_classes / vector_item)

CLASS_CHUNK = 32  # kClassChunk: pixels per chunk, interior items first


def vector_classes(pixels, vecs, gv, lo):
    """make_vector_classes: interior vectors [lo, gv - lo) of each group of gv."""
    lo_c = min(lo, gv)
    nig = max(gv - 2 * lo, 0)
    ni = vecs // gv * nig
    return dict(
        pixels=pixels,
        vecs=vecs,
        gv=gv,
        lo=lo_c,
        nig=nig,
        ni=ni,
        dividers=[CLASS_CHUNK * vecs, ni, vecs - ni, nig, gv - nig],
    )


def pack_vector_classes(q, c):
    def fill(r):
        r.i64(c["pixels"])
        for k in ("lo", "gv", "nig", "ni"):
            r.i32(c[k])
        for d in c["dividers"]:
            for v in int_divider(d):
                r.i32(v)

    q.struct_(fill, 8)


# ---- LRN (lrn.h Geometry, lrn_sweep.h Items / make_items)


def lrn_view(case):
    n, c, h, w = case.shape
    if case.cl:  # make_geometry: Geometry{1, c, n * p, 0, 1, c, true}
        return (1, c, n * h * w, 0, 1, c, True)
    return (n, c, h * w, c * h * w, h * w, 1, False)


def lrn_items(case):
    view = lrn_view(case)
    vec = lrn_vector(case)
    outer, c, pixels = view[:3]
    classes = vector_classes(0, 1, 1, 0)
    if case.cl:
        cols, runs, run = c // vec, 1, c
        count = pixels * cols
        classes = vector_classes(pixels, cols, cols, -(-SPAN // vec))  # edge: the first / last HX
    else:
        cols = pixels // vec
        run = min(c, CHANNEL_RUN)
        if case.direction == "bwd":  # make_backward_items
            run = -(-c // -(-c // BACKWARD_CHANNEL_RUN))
        runs = -(-c // run)
        count = outer * runs * cols
    return dict(count=count, cols=cols, runs=runs, run=run, vec=vec, classes=classes)


def lrn_params(case):
    it = lrn_items(case)
    view = lrn_view(case)
    p = Packer()
    for ptr in pointers(2 if case.direction == "fwd" else 3):
        p.ptr(ptr)

    def fill_view(q):
        for v in view[:6]:
            q.i64(v)
        q.u8(int(view[6]))

    def fill_items(q):
        q.i64(it["count"])
        q.i64(it["cols"])
        for k in ("runs", "run", "vec"):
            q.i32(it[k])
        pack_vector_classes(q, it["classes"])

    p.struct_(fill_view, 8)
    p.struct_(fill_items, 8)
    for v in (LRN_SCALE, LRN_BETA, LRN_K):
        p.f32(v)
    return bytes(p.buf)


# ---- max-pool (max_pool2d_3s2.h Forward3s2 / Backward3s2; forward_3s2_item, backward_3s2_item)

MAX_POOL2D_ROWS = 4  # kRows3s2: forward outputs per thread (at most), down one column
MAX_POOL2D_BLOCKS = 7  # kBlocks3s2: backward 2x2 input blocks per thread, along W (one channel)


def max_pool2d_chunks(case):
    """make_forward_3s2: (chunks, rows, longer): chunk k holds rows + (k < longer) outputs."""
    ho = case.pooled[2]
    chunks = -(-ho // MAX_POOL2D_ROWS)
    return chunks, ho // chunks, ho % chunks


def max_pool2d_plane_chunk(case):
    """plane_chunk_3s2: channels-first items take planes in chunks of gcd(N C, 32)."""
    return math.gcd(case.shape[0] * case.shape[1], 32)


def max_pool2d_lanes(case):
    """channel_lanes_3s2: channels per thread, forward and backward (2: channels_last 16-bit, even C)."""
    return 2 if case.cl and DTYPES[case.dtype][1] == 2 and case.shape[1] % 2 == 0 else 1


def max_pool2d_blocks(case):
    """backward_blocks_3s2: 7 for one channel; channel pairs 4 or 5, the fewer phantom blocks."""
    if max_pool2d_lanes(case) == 1:
        return MAX_POOL2D_BLOCKS
    bw = -(-case.shape[3] // 2)
    return 5 if -(-bw // 5) * 5 < -(-bw // 4) * 4 else 4


def max_pool2d_grid(case):
    """(items, dividers, (rows, cols) of a plane's item grid): the launch of the 3/2 kernel.
    Forward items: (row chunk of kRows outputs, output column); backward: (block row,
    group of kBlocks 2x2 blocks). NCHW items (plane, r, q); NHWC (image, r, q, channel)."""
    n, c, h, w = case.shape
    ho, wo = case.pooled[2:]
    if case.direction == "fwd":
        rows, cols = max_pool2d_chunks(case)[0], wo
    else:
        rows, cols = -(-h // 2), -(-(-(-w // 2)) // max_pool2d_blocks(case))
    lanes = max_pool2d_lanes(case)
    divisors = (c // lanes, cols, rows) if case.cl else (cols, max_pool2d_plane_chunk(case), rows)
    return n * (c // lanes) * rows * cols, [int_divider(d) for d in divisors], (rows, cols)


def max_pool2d_params(case):
    n, c, h, w = case.shape
    po = case.pooled
    items, dividers, _ = max_pool2d_grid(case)
    p = Packer()
    for ptr in pointers(3):
        p.ptr(ptr)
    for v in (items, c, h, w, po[2], po[3]):
        p.i32(v)
    if case.direction == "fwd":  # Forward3s2: rows, longer
        for v in max_pool2d_chunks(case)[1:]:
            p.i32(v)
    for divider in dividers:  # IntDivider inner, middle, outer
        for v in divider:
            p.i32(v)
    return bytes(p.buf)


# ---- fused stage (relu_lrn_max_pool2d.h Geometry; relu_lrn_max_pool2d_sweep.h Items / locate)


def relu_lrn_max_pool2d_geo(case):
    n, c, h, w = case.shape
    po = case.pooled
    cg = c // LRN_GROUPS
    pre, post = min(LRN_SIZE // 2, cg - 1), min((LRN_SIZE - 1) // 2, cg - 1)

    def strides(shape):
        nn, cc, hh, ww = shape
        return (cc * hh * ww, 1, ww * cc, cc) if case.cl else (cc * hh * ww, hh * ww, ww, 1)

    return dict(
        N=n, C=c, H=h, W=w, Ho=po[2], Wo=po[3], cg=cg, pre=pre, post=post, xs=strides(case.shape), os=strides(po)
    )


FORWARD_SLOTS = 132 * 4  # kH100ForwardSlots: an H100's resident forward sweep blocks


def channels_last_row_run(g, vecs, slots=FORWARD_SLOTS):
    """channels_last_row_run (relu_lrn_max_pool2d_sweep.h): the row run minimizing the input
    rows walked x the last wave's imbalance (stride 2: a run of r pooled rows walks 2 r + 1)."""
    best, best_run = None, g["Ho"]
    for n in range(1, g["Ho"] + 1):
        r = -(-g["Ho"] // n)
        runs = -(-g["Ho"] // r)
        walked = (runs - 1) * (2 * r + 1) + 2 * (g["Ho"] - (runs - 1) * r) + 1
        waves = -(-g["N"] * runs * g["Wo"] * vecs // THREADS) / slots
        cost = walked * math.ceil(waves) / waves
        if best is None or cost < best:
            best, best_run = cost, r
    return best_run


def relu_lrn_max_pool2d_items(case):
    """make_items (relu_lrn_max_pool2d_sweep.h): forward items are runs of row_run pooled
    rows of one pooled column, kPoolChannels channels (channels-first: Wo + 1 columns, the
    last a helper; warps of 31 positions) or V (channels-last)."""
    g = relu_lrn_max_pool2d_geo(case)
    vec = relu_lrn_max_pool2d_vector(case)
    bwd = case.direction == "bwd"
    rows, cols = (g["H"], g["W"]) if bwd else (g["Ho"], g["Wo"])
    if bwd:  # channels-first backward: pixel pairs; channels-last: runs of lane_pixels(vec)
        cols = -(-cols // (lane_pixels(vec) if case.cl else 2))
    row_run = 1
    if not bwd and not case.cl:  # the helper column of each row (locate_run)
        cols += 1
    if not bwd:
        n = -(-rows // POOL_ROWS)
        row_run = channels_last_row_run(g, g["C"] // vec) if case.cl else -(-rows // n)
        rows = -(-rows // row_run)
    run = relu_lrn_max_pool2d_backward_run(g["cg"]) if bwd else min(g["cg"], POOL_CHANNELS)
    runs_per_group = -(-g["cg"] // run)
    runs = runs_per_group * (g["C"] // g["cg"])
    vecs = g["C"] // vec
    pixels = g["N"] * rows * cols
    count = pixels * vecs if case.cl else pixels * runs
    pair_start, pair_dividers = [0] * (PAIR_CLASSES + 1), [0] * 5
    run_images, run_start, run_dividers = 0, [0] * (RUN_CLASSES + 1), [0] * 4
    if not bwd and not case.cl:  # make_items: the run classes of a chunk of images (locate_run)
        run_images = math.gcd(g["N"], 16)  # kRunImages
        groups = g["C"] // g["cg"]
        per_group = [
            max(runs_per_group - 2, 0),
            int(runs_per_group >= 2),
            int(runs_per_group >= 2),
            int(runs_per_group == 1),
        ]
        for c in range(RUN_CLASSES):
            items = run_images * groups * per_group[c] * rows * cols
            lanes = -(-items // RUN_LANES) * WARP  # warps overlap by a lane
            run_start[c + 1] = run_start[c] + -(-lanes // THREADS) * THREADS  # classes in whole blocks
        count = g["N"] // run_images * run_start[RUN_CLASSES]
        run_dividers = [run_start[RUN_CLASSES], rows * cols, per_group[0], groups]
    classes = vector_classes(0, 1, 1, 0)
    if not bwd and case.cl:  # make_items: the INSIDE items' class (fp32 only: has_inside_variant)
        halo = ((SPAN + 1) // 2 + vec - 1) // vec
        classes = vector_classes(pixels, vecs, g["cg"] // vec, halo if vec <= 4 else 0)
    if bwd and not case.cl:  # make_items: the pair classes of an image (locate_pair)
        inner, edge_rows = (g["Ho"] - 1) * (g["Wo"] - 1), 2 * (g["Ho"] - 1)
        per_run = [inner, inner, edge_rows + (g["H"] - 2 * g["Ho"]) * cols, edge_rows + 2 * cols]
        for c in range(PAIR_CLASSES):
            pair_start[c + 1] = pair_start[c] + -(-runs * per_run[c] // WARP) * WARP
        count = g["N"] * pair_start[PAIR_CLASSES]
        pair_dividers = [pair_start[PAIR_CLASSES], inner, g["Wo"] - 1, per_run[2], per_run[3]]
    return dict(
        count=count,
        rows=rows,
        cols=cols,
        runs_per_group=runs_per_group,
        runs=runs,
        run=run,
        row_run=row_run,
        vecs=vecs,
        vec=vec,
        pair_start=pair_start,
        pair_dividers=pair_dividers,
        classes=classes,
        run_images=run_images,
        run_start=run_start,
        run_dividers=run_dividers,
    )


PAIR_CLASSES = 4  # kPairClasses: odd / even interior rows, odd / even edge pairs
RUN_LANES = 31  # kRunLanes: positions a channels-first forward warp owns
RUN_CLASSES = 4  # kRunClasses: middle, first, last, only run of a group (channels-first forward)


def int_divider(d):
    """IntDivider(d) (csrc/int_divider.h): (d, m, s) with n // d == (umulhi(n, m) + n) >> s."""
    d = max(d, 1)
    s = 0
    while (1 << s) < d:
        s += 1
    m = ((1 << 32) * ((1 << s) - d)) // d + 1
    return d, m - (1 << 32) if m >= 1 << 31 else m, s


def relu_lrn_max_pool2d_params(case):
    g = relu_lrn_max_pool2d_geo(case)
    it = relu_lrn_max_pool2d_items(case)
    p = Packer()
    for ptr in pointers(3 if case.direction == "fwd" else 4):
        p.ptr(ptr)

    def fill_geo(q):
        for v in (
            g["N"],
            g["C"],
            g["H"],
            g["W"],
            g["Ho"],
            g["Wo"],
            POOL_K,
            POOL_K,
            POOL_S,
            POOL_S,
            g["cg"],
            g["pre"],
            g["post"],
        ):
            q.i32(v)
        for v in g["xs"] + g["os"]:
            q.i64(v)

    def fill_items(q):
        q.i64(it["count"])
        for k in ("rows", "cols", "runs_per_group", "runs", "run", "row_run", "vecs", "vec"):
            q.i32(it[k])
        for d in (it["vecs"], it["cols"], it["rows"], it["runs"], it["runs_per_group"], g["cg"] // it["vec"]):
            for v in int_divider(d):
                q.i32(v)
        for v in it["pair_start"]:
            q.i32(v)
        for d in it["pair_dividers"]:
            for v in int_divider(d):
                q.i32(v)
        q.i32(it["run_images"])
        for v in it["run_start"]:
            q.i32(v)
        for d in it["run_dividers"]:
            for v in int_divider(d):
                q.i32(v)
        pack_vector_classes(q, it["classes"])

    p.struct_(fill_geo, 8)
    p.struct_(fill_items, 8)
    for v in (LRN_SCALE, LRN_BETA, LRN_K):
        p.f32(v)
    return bytes(p.buf)


LANE_ITEMS = 30  # backward_lanes: lanes 1..30 of a warp own its 30 items


def lane_items(case):
    """lane_items (relu_lrn_max_pool2d_sweep.h): 32 where warps hold whole LRN groups
    (lanes_hold_groups: C / V a multiple of 32, 32 a multiple of group_channels / V), else 30."""
    g, vec = relu_lrn_max_pool2d_geo(case), relu_lrn_max_pool2d_vector(case)
    return WARP if (g["C"] // vec) % WARP == 0 and WARP % (g["cg"] // vec) == 0 else LANE_ITEMS


RUN_VALUES = 16  # kRunValues: a channels-last backward item is a run of 16 / V pixels of a row


def lane_pixels(vec):
    """kLanePixels<V>: pixels of one row per channels-last backward item."""
    return RUN_VALUES // vec


PARAMS = {"lrn": lrn_params, "max_pool2d": max_pool2d_params, "relu_lrn_max_pool2d": relu_lrn_max_pool2d_params}


def elements_total(case):
    """Elements the launch processes (what instr_per_elem is per): LRN every element;
    max-pool and stage forward the pooled outputs, backward the input elements."""
    if case.direction == "fwd" and case.op in ("max_pool2d", "relu_lrn_max_pool2d"):
        return numel(case.pooled)
    return numel(case.shape)


def fewest_bytes(case):
    """Bytes the op must move at least: every input read once, every output written once
    (uint8 argmax included)."""
    x, y = numel(case.shape), numel(case.pooled)
    e = case.esize
    if case.op == "lrn":
        return (2 if case.direction == "fwd" else 3) * x * e
    if case.direction == "fwd":  # read x; write out + argmax
        return x * e + y * (e + 1)
    if case.op == "max_pool2d":  # read dy + argmax; write dx
        return y * (e + 1) + x * e
    return y * (e + 1) + 2 * x * e  # stage: read dy + argmax + x; write dx


def all_cases():
    return [
        Case(op, d, dt, lay, shape)
        for op in ("lrn", "max_pool2d", "relu_lrn_max_pool2d")
        for d in ("fwd", "bwd")
        for dt in DTYPES
        for lay in LAYOUTS
        for shape in SHAPES
    ]
