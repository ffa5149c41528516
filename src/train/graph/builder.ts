// A symbolic ONNX graph with reverse-mode differentiation, for running a whole draft-training step in one
// ONNX Runtime session (src/train/ort-step.ts). Each op emits ONNX nodes and, when an input needs a
// gradient, records how to send the output's gradient back; `backward` then walks that tape last op first
// and emits the gradient nodes into the same graph. Shapes are tracked statically, with symbolic axes
// (e.g. 'B', 'T') bound to a runtime size once, so broadcasting gradients know which axes to sum over and
// one session serves every batch and sequence length.
import { DataType, type DataTypeId, encodeModel, type NodeProto, type TensorProto, type ValueInfo } from '../../io/onnx-proto.ts';
import { argmaxNodes } from './argmax.ts';

export type Dim = number | string;

/** A value in the graph: its ONNX name, static shape (symbolic axes as strings) and whether it carries a gradient. */
export interface Sym {
  readonly name: string;
  readonly shape: readonly Dim[];
  readonly grad: boolean;
}

type Backward = (g: Sym) => (Sym | null)[];

const sameDim = (a: Dim, b: Dim) => a === b;

/** The shape two operands broadcast to (numpy rules, symbolic axes equal only to themselves or 1). */
export function broadcastShape(a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1 || sameDim(x, y)) out.push(x);
    else throw new Error(`graph: shapes [${a}] and [${b}] do not broadcast`);
  }
  return out;
}

export class TrainGraph {
  private readonly nodes: NodeProto[] = [];
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly tape: { out: Sym; ins: Sym[]; back: Backward }[] = [];
  /** Symbolic axis -> int64 [1] tensor holding its runtime size. */
  private readonly dims = new Map<string, string>();
  private readonly consts = new Map<string, string>();
  /** Weight-gradient Gemms by output name: backward adds an earlier gradient to one as its C input. */
  private readonly weightGemms = new Map<string, NodeProto>();
  /** x^T of the rows a weight gradient reads, by the rows' name (see weightGrad). */
  private readonly transposed = new Map<string, string>();
  private count = 0;

  private fresh(prefix: string): string {
    return `${prefix}_${this.count++}`;
  }

  private emit(opType: string, inputs: string[], attributes?: NodeProto['attributes'], outputs = 1): string[] {
    const names = Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({ opType, inputs, outputs: names, ...(attributes ? { attributes } : {}) });
    return names;
  }

  private sym(name: string, shape: readonly Dim[], ins: Sym[], back?: Backward): Sym {
    const grad = back !== undefined && ins.some((x) => x.grad);
    const s: Sym = { name, shape: [...shape], grad };
    if (grad) this.tape.push({ out: s, ins, back: back! });
    return s;
  }

  /** A graph input; symbolic axes are bound to their runtime size from the first input that has them. */
  input(name: string, shape: Dim[], opts: { grad?: boolean; type?: 'float32' | 'int64' } = {}): Sym {
    const elemType: DataTypeId = opts.type === 'int64' ? DataType.INT64 : DataType.FLOAT;
    this.inputs.push({ name, elemType, shape });
    shape.forEach((d, axis) => {
      if (typeof d === 'string' && !this.dims.has(d)) {
        const [size] = this.emit('Shape', [name], { start: axis, end: axis + 1 });
        this.dims.set(d, size);
      }
    });
    return { name, shape, grad: opts.grad ?? false };
  }

  /** Marks a value as a graph output. */
  output(x: Sym, type: 'float32' | 'int64' = 'float32'): void {
    this.outputs.push({ name: x.name, elemType: type === 'int64' ? DataType.INT64 : DataType.FLOAT, shape: [...x.shape] });
  }

  /** Renames a value to a stable name (an Identity node), for outputs. */
  named(x: Sym, name: string): Sym {
    this.nodes.push({ opType: 'Identity', inputs: [x.name], outputs: [name] });
    return { name, shape: x.shape, grad: false };
  }

  private constant(key: string, t: Omit<TensorProto, 'name'>): string {
    let name = this.consts.get(key);
    if (!name) {
      name = this.fresh('const');
      this.initializers.push({ name, ...t });
      this.consts.set(key, name);
    }
    return name;
  }

  ints(values: number[]): string {
    const raw = new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer);
    return this.constant(`i64:${values}`, { dataType: DataType.INT64, dims: [values.length], raw });
  }

  /** A float32 scalar constant. */
  scalar(value: number): Sym {
    const raw = new Uint8Array(Float32Array.of(value).buffer);
    return { name: this.constant(`f32:${value}`, { dataType: DataType.FLOAT, dims: [], raw }), shape: [], grad: false };
  }

  /** The runtime size of a symbolic axis plus an offset, as int64 [1]. */
  dimPlus(d: Dim, offset = 0): string {
    if (typeof d === 'number') return this.ints([d + offset]);
    const size = this.dims.get(d);
    if (!size) throw new Error(`graph: symbolic axis '${d}' is not bound by any input`);
    return offset === 0 ? size : this.emit('Add', [size, this.ints([offset])])[0];
  }

  /** An int64 shape tensor for a static shape with symbolic axes. */
  shapeOf(shape: readonly Dim[]): string {
    if (shape.every((d) => typeof d === 'number')) return this.ints(shape as number[]);
    const key = `shape:${shape.join(',')}`;
    let name = this.consts.get(key);
    if (!name) {
      name = this.emit(
        'Concat',
        shape.map((d) => this.dimPlus(d)),
        { axis: 0 },
      )[0];
      this.consts.set(key, name);
    }
    return name;
  }

  // ---- ops ----

  /**
   * x plus a zero computed from g: the same value, but one that ONNX Runtime can only compute once g exists.
   * Its execution order is a topological sort that may otherwise run a backward pass's recomputation (of
   * logits, of attention scores) early and hold every step's result until the gradient arrives.
   */
  private after(x: string, g: Sym): string {
    return this.emit('Add', [x, this.zeroAfter(g)])[0];
  }

  /** A float 0 that ORT can compute only once g is there (0 * sum g). */
  private zeroAfter(g: Sym): string {
    return this.emit('Mul', [this.emit('ReduceSum', [g.name], { keepdims: 0 })[0], this.scalar(0).name])[0];
  }

  /** Sums g over the axes that were broadcast from `shape`. */
  reduceTo(g: Sym, shape: readonly Dim[]): Sym {
    let x = g;
    const lead = x.shape.length - shape.length;
    if (lead > 0) {
      const axes = Array.from({ length: lead }, (_, i) => i);
      x = { name: this.emit('ReduceSum', [x.name, this.ints(axes)], { keepdims: 0 })[0], shape: x.shape.slice(lead), grad: false };
    }
    const axes = shape.flatMap((d, i) => (d === 1 && x.shape[i] !== 1 ? [i] : []));
    if (axes.length) x = { name: this.emit('ReduceSum', [x.name, this.ints(axes)], { keepdims: 1 })[0], shape: [...shape], grad: false };
    return x;
  }

  add(a: Sym, b: Sym): Sym {
    const shape = broadcastShape(a.shape, b.shape);
    return this.sym(this.emit('Add', [a.name, b.name])[0], shape, [a, b], (g) => [this.reduceTo(g, a.shape), this.reduceTo(g, b.shape)]);
  }

  sub(a: Sym, b: Sym): Sym {
    const shape = broadcastShape(a.shape, b.shape);
    return this.sym(this.emit('Sub', [a.name, b.name])[0], shape, [a, b], (g) => [
      this.reduceTo(g, a.shape),
      b.grad ? this.reduceTo(this.neg(g), b.shape) : null,
    ]);
  }

  mul(a: Sym, b: Sym): Sym {
    const shape = broadcastShape(a.shape, b.shape);
    return this.sym(this.emit('Mul', [a.name, b.name])[0], shape, [a, b], (g) => [
      a.grad ? this.reduceTo(this.mul(g, b), a.shape) : null,
      b.grad ? this.reduceTo(this.mul(g, a), b.shape) : null,
    ]);
  }

  neg(a: Sym): Sym {
    return this.sym(this.emit('Neg', [a.name])[0], a.shape, [a], (g) => [this.neg(g)]);
  }

  /**
   * SiLU, a sigmoid(a), with its gradient written out: g (s + y (1 - s)) = g (s + y - y s), four passes
   * over the [T, I] activations where the product rule through a separate sigmoid took six.
   */
  silu(a: Sym): Sym {
    const [s] = this.emit('Sigmoid', [a.name]);
    const [y] = this.emit('Mul', [a.name, s]);
    return this.sym(y, a.shape, [a], (g) => {
      const [d] = this.emit('Add', [s, this.emit('Sub', [y, this.emit('Mul', [y, s])[0]])[0]]);
      return [{ name: this.emit('Mul', [g.name, d])[0], shape: a.shape, grad: false }];
    });
  }

  reshape(a: Sym, shape: Dim[]): Sym {
    return this.sym(this.emit('Reshape', [a.name, this.shapeOf(shape)])[0], shape, [a], (g) => [this.reshape(g, [...a.shape])]);
  }

  transpose(a: Sym, perm: number[]): Sym {
    const inverse = perm.map((_, i) => perm.indexOf(i));
    return this.sym(
      this.emit('Transpose', [a.name], { perm })[0],
      perm.map((p) => a.shape[p]),
      [a],
      (g) => [this.transpose(g, inverse)],
    );
  }

  /** x [..., K] times a 2-D weight [K, N], as one 2-D Gemm over the flattened rows. */
  linear(x: Sym, w: Sym): Sym {
    const [K, N] = w.shape;
    if (w.shape.length !== 2 || !sameDim(x.shape[x.shape.length - 1], K)) throw new Error(`graph: linear [${x.shape}] x [${w.shape}]`);
    const rows = this.reshape(x, [-1, K] as Dim[]);
    const y2 = this.sym(this.emit('Gemm', [rows.name, w.name])[0], [-1, N], [rows, w], (g) => [
      rows.grad ? { name: this.emit('Gemm', [g.name, w.name], { transB: 1 })[0], shape: rows.shape, grad: false } : null,
      w.grad ? this.weightGrad(rows, g.name, w.shape) : null,
    ]);
    return this.reshape(y2, [...x.shape.slice(0, -1), N]);
  }

  /**
   * x^T g for a [K, N] weight from rows x [rows, K], one Gemm over x^T written out. MLAS runs a Gemm with
   * transA about 20% slower than the same product on a transposed copy (at [512, 896]^T [512, 16000] and
   * [512, 4864]^T [512, 896]), and the copy is small and shared by every weight that reads the same rows
   * (q, k, v; gate, up). A Reshape after the Transpose keeps ORT's optimizer from folding it back into transA.
   */
  private weightGrad(rows: Sym, g: string, shape: readonly Dim[]): Sym {
    let xt = this.transposed.get(rows.name);
    if (!xt) {
      xt = this.emit('Reshape', [this.emit('Transpose', [rows.name], { perm: [1, 0] })[0], this.ints([shape[0] as number, -1])])[0];
      this.transposed.set(rows.name, xt);
    }
    const [name] = this.emit('Gemm', [xt, g]);
    this.weightGemms.set(name, this.nodes[this.nodes.length - 1]);
    return { name, shape, grad: false };
  }

  concat(xs: Sym[], axis: number): Sym {
    const ax = axis < 0 ? xs[0].shape.length + axis : axis;
    const sizes = xs.map((x) => x.shape[ax]);
    const total: Dim = sizes.every((d) => typeof d === 'number') ? (sizes as number[]).reduce((s, d) => s + d, 0) : `${sizes.join('+')}`;
    const shape = [...xs[0].shape];
    shape[ax] = total;
    return this.sym(
      this.emit(
        'Concat',
        xs.map((x) => x.name),
        { axis: ax },
      )[0],
      shape,
      xs,
      (g) => {
        // Each input's gradient is its slice of g along the axis: start and end summed from the sizes before it.
        let start = this.ints([0]);
        return xs.map((x) => {
          const end = this.emit('Add', [start, this.dimPlus(x.shape[ax])])[0];
          const part = x.grad ? { name: this.emit('Slice', [g.name, start, end, this.ints([ax])])[0], shape: x.shape, grad: false } : null;
          start = end;
          return part;
        });
      },
    );
  }

  /**
   * Rows [start, start + size) along an axis of a value without a gradient (inputs such as tables and
   * teachers); with `after`, computed only once that value is (see after).
   */
  slice(a: Sym, axis: number, start: number, size: Dim, after?: Sym): Sym {
    if (a.grad) throw new Error('graph: slice of a value with a gradient');
    const shape = [...a.shape];
    shape[axis] = size;
    let starts = this.ints([start]);
    if (after) {
      const zero = this.emit('Cast', [this.emit('Reshape', [this.zeroAfter(after), this.ints([1])])[0]], { to: DataType.INT64 })[0];
      starts = this.emit('Add', [starts, zero])[0];
    }
    const name = this.emit('Slice', [a.name, starts, this.dimPlus(size, start), this.ints([axis])])[0];
    return { name, shape, grad: false };
  }

  /** Pads a value without a gradient with `after` zeros at the end of an axis. */
  padEnd(a: Sym, axis: number, after: number, size: Dim): Sym {
    const pads = new Array(2 * a.shape.length).fill(0);
    pads[a.shape.length + axis] = after;
    const shape = [...a.shape];
    shape[axis] = size;
    return { name: this.emit('Pad', [a.name, this.ints(pads)])[0], shape, grad: false };
  }

  /**
   * The lm_head and the soft cross-entropy fused: z = x w (x [..., K], w [K, V]) and, per row ([..., 1]),
   * sum_v p log softmax(z) with p = rows [start, start + size) of `teacher` along axis 1 (no gradient); also
   * argmax z. Backward: dz = g (p - softmax(z) sum_v p), then dx = dz w^T and dw = x^T dz. With `recompute`
   * nothing of size [rows, V] is kept: the teacher rows are sliced again and z is recomputed from x (one
   * more product). At T 2048 and V 16000 each such tensor is 125 MiB a TTT step.
   */
  lmHeadLoss(x: Sym, w: Sym, teacher: Sym, start: number, size: Dim, recompute: boolean): { row: Sym; argmax: Sym } {
    const [K, V] = w.shape;
    const rows = this.reshape(x, [-1, K]);
    const lead = x.shape.slice(0, -1);
    const logits = (input: string) => this.emit('Reshape', [this.emit('Gemm', [input, w.name])[0], this.shapeOf([...lead, V])])[0];
    const z = logits(rows.name);
    const p = this.slice(teacher, 1, start, size);
    const [ls] = this.emit('LogSoftmax', [z], { axis: -1 });
    const [row] = this.emit('ReduceSum', [this.emit('Mul', [p.name, ls])[0], this.ints([-1])], { keepdims: 1 });
    const argmax: Sym = { name: this.argmax(z, lead.length + 1, V as number), shape: lead, grad: false };
    const out = this.sym(row, [...lead, 1], [rows, w], (g) => {
      // Recomputing: slice the teacher rows again once g is there. Sliced alike, ORT would merge the two
      // slices into one kept through the whole backward pass (917 MiB over 7 steps at T 2048, V 16000).
      const p2 = recompute ? this.slice(teacher, 1, start, size, g) : p;
      const [sm] = this.emit('Softmax', [recompute ? logits(this.after(rows.name, g)) : z], { axis: -1 });
      const [mass] = this.emit('ReduceSum', [p2.name, this.ints([-1])], { keepdims: 1 });
      const [gp] = this.emit('Mul', [g.name, p2.name]);
      const [dz] = this.emit('Sub', [gp, this.emit('Mul', [sm, this.emit('Mul', [g.name, mass])[0]])[0]]);
      const [dz2] = this.emit('Reshape', [dz, this.ints([-1, V as number])]);
      return [
        rows.grad ? { name: this.emit('Gemm', [dz2, w.name], { transB: 1 })[0], shape: rows.shape, grad: false } : null,
        w.grad ? this.weightGrad(rows, dz2, w.shape) : null,
      ];
    });
    return { row: out, argmax };
  }

  /** argmax over the last axis of x (rank `rank`, last axis V), the first index on ties (graph/argmax.ts). */
  private argmax(x: string, rank: number, V: number): string {
    const out = this.fresh('argmax');
    const { nodes, initializers } = argmaxNodes(x, out, rank, V, out);
    this.nodes.push(...nodes);
    this.initializers.push(...initializers);
    return out;
  }

  /** RMSNorm over the last axis with weight w; the gradient is written out (dx = r (u - x̂ mean(u x̂)), u = g w). */
  rmsNorm(x: Sym, w: Sym, eps: number): Sym {
    const [sq] = this.emit('Mul', [x.name, x.name]);
    const [ms] = this.emit('ReduceMean', [sq], { axes: [-1], keepdims: 1 });
    const [r] = this.emit('Reciprocal', [this.emit('Sqrt', [this.emit('Add', [ms, this.scalar(eps).name])[0]])[0]]);
    const rs: Sym = { name: r, shape: [...x.shape.slice(0, -1), 1], grad: false };
    const xh: Sym = { name: this.emit('Mul', [x.name, r])[0], shape: x.shape, grad: false };
    return this.sym(this.emit('Mul', [xh.name, w.name])[0], x.shape, [x, w], (g) => {
      const u = this.mul(g, w);
      const [m] = this.emit('ReduceMean', [this.mul(u, xh).name], { axes: [-1], keepdims: 1 });
      const mean: Sym = { name: m, shape: rs.shape, grad: false };
      return [x.grad ? this.mul(rs, this.sub(u, this.mul(xh, mean))) : null, w.grad ? this.reduceTo(this.mul(g, xh), w.shape) : null];
    });
  }

  /** HF rotary embedding x cos + rotate_half(x) sin over the last axis (cos, sin broadcast, no gradient). */
  rope(x: Sym, cos: Sym, sin: Sym): Sym {
    const hd = x.shape[x.shape.length - 1] as number;
    const rotate = (v: Sym, inverse: boolean): Sym => {
      // rotate_half(v) = [-v2, v1]; its transpose maps g to [g2, -g1].
      const [a, b] = this.emit('Split', [v.name, this.ints([hd / 2, hd / 2])], { axis: -1 }, 2);
      const parts = inverse ? [b, this.emit('Neg', [a])[0]] : [this.emit('Neg', [b])[0], a];
      return { name: this.emit('Concat', parts, { axis: -1 })[0], shape: v.shape, grad: false };
    };
    const y = this.emit('Add', [this.emit('Mul', [x.name, cos.name])[0], this.emit('Mul', [rotate(x, false).name, sin.name])[0]])[0];
    return this.sym(y, x.shape, [x], (g) => {
      const gs: Sym = { name: this.emit('Mul', [g.name, sin.name])[0], shape: g.shape, grad: false };
      return [{ name: this.emit('Add', [this.emit('Mul', [g.name, cos.name])[0], rotate(gs, true).name])[0], shape: x.shape, grad: false }];
    });
  }

  /**
   * Training-time-test attention over grouped heads, its gradient written out. q [B, kv, g, T, hd] attends
   * causally (`bias` [T, T]) to step 0's keys ks[0] and diagonally to each later step's key ks[j] at the
   * same position (keys and values [B, kv, 1, T, hd]); one softmax over the T + j columns.
   * The [T, T] scores are never concatenated with the diagonal columns: P' = softmax(S0) over the causal
   * columns alone, and each row's share of the whole softmax, r = exp(lse(S0) - lse(all)), scales only
   * [T, hd]-sized values (O = r (P' V0) + sum_j p_j V_j). Backward, with P0 = r P' and
   * c = rowsum(dP0 P0) + sum_j dp_j p_j: dS0 = P0 (dP0 - c) = P' (r dP0 - r c), dd_j = p_j (dp_j - c); the
   * score scale goes on q and on the [T, hd] results, so every full-size pass is one that must be there.
   * With `recompute` the backward pass recomputes P' from q, the keys and each row's log-normaliser rather
   * than keep it (one more [T, T] product per step; at T 2048 with 16 heads P' is 256 MiB a step).
   */
  tttAttention(q: Sym, keys: Sym[], values: Sym[], bias: Sym, scale: number, recompute: boolean): Sym {
    const [ks, vs] = [[...keys], [...values]]; // the caller's lists grow with later steps
    const op = (type: string, inputs: string[], attributes?: NodeProto['attributes']) => this.emit(type, inputs, attributes)[0];
    const [B, kv, group, T, hd] = q.shape;
    // The [T, T] products run per kv head over all its query heads at once ([g T, hd] rows, no broadcast
    // batch axis): one larger GEMM each, and dK, dV come out summed over the group.
    const rowsOf = (x: string, last: Dim) => op('Reshape', [x, this.shapeOf([B, kv, -1, last])]);
    const grouped = (x: string, last: Dim) => op('Reshape', [x, this.shapeOf([B, kv, group, T, last])]);
    const heads4 = (x: Sym) => op('Reshape', [x.name, this.shapeOf([B, kv, T, hd])]);
    const rowSum = (a: string, b: string) => op('ReduceSum', [op('Mul', [a, b]), this.ints([-1])], { keepdims: 1 });
    const t4 = (a: string) => op('Transpose', [a], { perm: [0, 1, 3, 2] });
    const s = this.scalar(scale).name;
    const k0 = heads4(ks[0]);
    const v0 = heads4(vs[0]);
    const qs = op('Mul', [q.name, s]);
    const causalScores = (queries: string) => op('Add', [grouped(op('MatMul', [rowsOf(queries, hd), t4(k0)]), T), bias.name]);
    const scores = causalScores(qs);
    const p = op('Softmax', [scores], { axis: -1 });
    const diag = ks.slice(1).map((k) => rowSum(qs, k.name));
    // Each row's log-normaliser: what recomputation keeps of the [T, T] scores, and the causal share r.
    // Read off the softmax as max(S0) - log(max(P')): the largest p' is exp(max - lse), at least 1/T, and
    // two vectorised ReduceMax passes take a tenth of ORT's ReduceLogSumExp over [T, T].
    const lse0 =
      recompute || diag.length
        ? op('Sub', [
            op('ReduceMax', [scores], { axes: [-1], keepdims: 1 }),
            op('Log', [op('ReduceMax', [p], { axes: [-1], keepdims: 1 })]),
          ])
        : null;
    let r: string | null = null;
    let pj: string[] = [];
    if (diag.length) {
      const lse = op('ReduceLogSumExp', [op('Concat', [lse0!, ...diag], { axis: -1 })], { axes: [-1], keepdims: 1 });
      r = op('Exp', [op('Sub', [lse0!, lse])]);
      pj = diag.map((d) => op('Exp', [op('Sub', [d, lse])]));
    }
    const pv = grouped(op('MatMul', [rowsOf(p, T), v0]), hd); // P' V0
    let out = r ? op('Mul', [pv, r]) : pv;
    pj.forEach((x, j) => {
      out = op('Add', [out, op('Mul', [x, vs[j + 1].name])]);
    });
    const inputs = [q, ...ks, ...vs];
    return this.sym(out, q.shape, inputs, (g) => {
      const pb = recompute ? op('Exp', [op('Sub', [causalScores(this.after(qs, g)), lse0!])]) : p; // P' (again)
      const gr = r ? op('Mul', [g.name, r]) : g.name;
      const dP = grouped(op('MatMul', [rowsOf(gr, hd), t4(v0)]), T); // r dP0
      const dpj = vs.slice(1).map((v) => rowSum(g.name, v.name));
      // rowsum(dP0 P0) = r rowsum(dO (P' V0)): from [T, hd] values, not another two passes over [T, T].
      let c = rowSum(gr, pv);
      dpj.forEach((d, j) => {
        c = op('Add', [c, op('Mul', [d, pj[j]])]);
      });
      const dS0 = rowsOf(op('Mul', [pb, op('Sub', [dP, r ? op('Mul', [c, r]) : c])]), T);
      const ddj = dpj.map((d, j) => op('Mul', [pj[j], op('Sub', [d, c])]));
      let dq = grouped(op('MatMul', [dS0, k0]), hd);
      ddj.forEach((d, j) => {
        dq = op('Add', [dq, op('Mul', [d, ks[j + 1].name])]);
      });
      const scaled = (x: string) => op('Mul', [x, s]);
      const kvShape = ks[0].shape;
      const asKv = (x: string): Sym => ({ name: op('Reshape', [x, this.shapeOf(kvShape)]), shape: kvShape, grad: false });
      const groupSum = (x: string): Sym => this.reduceTo({ name: x, shape: q.shape, grad: false }, kvShape);
      return [
        { name: scaled(dq), shape: q.shape, grad: false },
        asKv(scaled(op('MatMul', [t4(dS0), rowsOf(q.name, hd)]))),
        ...ddj.map((d) => groupSum(scaled(op('Mul', [d, q.name])))),
        asKv(op('MatMul', [t4(rowsOf(pb, T)), rowsOf(gr, hd)])),
        ...pj.map((x) => groupSum(op('Mul', [x, g.name]))),
      ];
    });
  }

  /**
   * Emits the gradient nodes: `seeds` pairs values with the gradient flowing into them; returns the
   * gradient of every input in `wrt` (null where none reaches it).
   */
  backward(seeds: [Sym, Sym][], wrt: Sym[]): (Sym | null)[] {
    const grads = new Map<string, Sym>();
    const addGrad = (x: Sym, g: Sym) => {
      const prev = grads.get(x.name);
      const gemm = this.weightGemms.get(g.name);
      if (prev && gemm?.inputs.length === 2) {
        // A weight read by every TTT step: its Gemm adds the gradient so far as C (beta 1), which ORT
        // writes in place, instead of an Add pass over the whole weight per step (57 MiB for the M lm_head).
        gemm.inputs.push(prev.name);
        grads.set(x.name, g);
      } else grads.set(x.name, prev ? { name: this.emit('Add', [prev.name, g.name])[0], shape: x.shape, grad: false } : g);
    };
    for (const [x, g] of seeds) addGrad(x, g);
    const tape = this.tape.splice(0); // gradient ops record nothing further
    for (let i = tape.length - 1; i >= 0; i--) {
      const { out, ins, back } = tape[i];
      const g = grads.get(out.name);
      if (!g) continue;
      back(g).forEach((gi, k) => {
        if (gi && ins[k].grad) addGrad(ins[k], gi);
      });
    }
    return wrt.map((x) => grads.get(x.name) ?? null);
  }

  /** The serialized model. */
  encode(name: string): Uint8Array {
    return encodeModel({
      irVersion: 8,
      opset: 17,
      producerName: 'specforge',
      producerVersion: '0.1.0',
      graph: { name, nodes: this.nodes, initializers: this.initializers, inputs: this.inputs, outputs: this.outputs },
    });
  }

  get nodeCount(): number {
    return this.nodes.length;
  }
}
