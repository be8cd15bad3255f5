//! The single-token decode step as a CUDA graph.
//!
//! The model announces a step with `begin_decode_step(token, pos)` and closes it with
//! `end_decode_step`. Inside a step:
//! - every `tensor()` comes from an arena, slot `i` for the step's `i`-th tensor, so the same
//!   addresses serve every step and nothing is allocated;
//! - the token and its position live in a small device buffer written once per step, and the
//!   ops that depend on them (embed, rope, the cache store, attention) read it there, so the
//!   kernels' arguments do not change from one position to the next.
//!
//! The first step runs eagerly and sizes the arena ("warm-up"); the second is captured into a
//! graph and launched; later steps replay: the model's code still calls every op (cheap host
//! work: shapes are checked, nothing is launched) and `end_decode_step` launches the graph.
//! Each op mixes what the graph bakes in (its kind, weight and cache addresses, tensor sizes)
//! into a fingerprint, and the step launches the recorded graph with that fingerprint. None
//! (another KV cache: a second session) launches nothing and asks the caller to run the step
//! again without the hooks; the next step is recorded too, so up to `MAX_GRAPHS` sessions
//! alternate without re-recording. A tensor of another size empties the arena and the graphs
//! (warm-up again). A failed capture, or an op with no device-position kernel (a q8_0 cache
//! with standard attention), turns steps off for the backend (with a warning): plain passes from
//! then on, as with graphs off (`WASM_CHORD_CUDA_GRAPH=0`). Attention in a step is
//! flash-decoding with its splits planned for the cache's capacity, so one graph serves every
//! position.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::{CUdeviceptr, CUevent_flags, CUgraphInstantiate_flags, CUgraphNodeType, CUstreamCaptureMode};
use cudarc::driver::{CudaEvent, CudaGraph, CudaSlice, CudaStream, DevicePtr};
use wasm_chord_core::backend::{BackendError, Op};

use crate::buffer::DeviceBuf;
use crate::ops::launch_err;

/// What the current op call is part of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Not in a decode step: ops run as usual.
    Off,
    /// First step: run eagerly, growing the arena.
    Warmup,
    /// Ops are recorded into a graph, not executed; the graph is launched at the end.
    Capture,
    /// The recorded graph will be launched at the end: ops only check their arguments.
    Replay,
}

impl Mode {
    /// Whether ops launch kernels now (directly, or into the capture).
    pub fn launches(self) -> bool {
        self != Mode::Replay
    }

    /// Whether ops must read the token and its position from device memory.
    pub fn device_position(self) -> bool {
        self != Mode::Off
    }
}

struct Slot {
    bytes: usize,
    buf: CudaSlice<u8>,
}

/// A recorded graph and the fingerprint of the step it was recorded from.
struct Recorded {
    graph: CudaGraph,
    fingerprint: u64,
    slots: usize,
}

// SAFETY: the graph is only touched with the backend's step mutex held (one thread at a time),
// which is all CUDA asks of graph objects.
unsafe impl Send for Recorded {}

pub struct StepState {
    mode: Mode,
    graphs: bool,
    /// Something in the step cannot read its position from the device (a q8_0 cache with
    /// standard attention, say), or a capture failed: steps run as plain passes from then on.
    disabled: bool,
    /// The current step runs as a plain pass (graphs off).
    plain: bool,
    arena: Vec<Slot>,
    arena_ready: bool,
    next_slot: usize,
    fingerprint: u64,
    /// Why this step cannot be recorded or replayed, once something says so.
    broken: Option<String>,
    /// The step needs an eager warm-up before it can be captured (scratch to grow).
    rewarm: bool,
    /// Recorded graphs, newest last.
    recorded: Vec<Recorded>,
    /// The last replay found no graph for its fingerprint: record the next step.
    capture_next: bool,
    token: u32,
    pos: usize,
    /// `[token, pos]` on the device, and views of its two values.
    params: CudaSlice<i32>,
    token_dev: DeviceBuf<u32>,
    pos_dev: DeviceBuf<i32>,
    /// Steps run and graphs launched, for tests and logs.
    pub stats: StepStats,
    /// Counts ops (every `note`, in or out of steps) and new tensors outside the arena (`bump`):
    /// two moments with the same count have no op between them (the int8 matvec reuses
    /// quantized activations).
    epoch: u64,
    /// Where replayed steps spend their time (`WASM_CHORD_STEP_TIMING=1`).
    timing: Option<Timing>,
}

/// Where the time of replayed decode steps goes, measured when `WASM_CHORD_STEP_TIMING=1` and
/// logged (info) every `TIMING_EVERY` replays: the host running the model code (ops only
/// checked and fingerprinted), the graph launch call, the graph's span on the GPU (events
/// around the launch; the GPU is idle when the first is recorded, so this is kernels plus the
/// gaps between graph nodes), and the host time from one step's launch to the next step's
/// begin (argmax, its read-back, which waits for the GPU, and the runtime's loop).
struct Timing {
    replays: u64,
    ops_s: f64,
    launch_s: f64,
    gpu_s: f64,
    between_s: f64,
    begun: Option<Instant>,
    ended: Option<Instant>,
    events: Option<(CudaEvent, CudaEvent)>,
    /// The events of the last launch have not been read yet.
    pending: bool,
    /// Kernel and other nodes of the last recorded graph.
    nodes: (usize, usize),
}

const TIMING_EVERY: u64 = 64;

impl Timing {
    fn new(stream: &Arc<CudaStream>) -> Self {
        let ctx = stream.context();
        let ev = || ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).ok();
        let events = ev().zip(ev());
        Self { replays: 0, ops_s: 0.0, launch_s: 0.0, gpu_s: 0.0, between_s: 0.0, begun: None, ended: None, events, pending: false, nodes: (0, 0) }
    }

    fn log(&self) {
        let n = self.replays.max(1) as f64;
        let us = |s: f64| s / n * 1e6;
        tracing::info!(
            "decode step timing over {} replays: model code {:.1} us, graph launch {:.1} us, graph on the GPU {:.1} us, launch to next step {:.1} us; graph: {} kernels, {} other nodes",
            self.replays,
            us(self.ops_s),
            us(self.launch_s),
            us(self.gpu_s),
            us(self.between_s),
            self.nodes.0,
            self.nodes.1
        );
    }
}

/// Kernel nodes and other nodes of a graph.
fn count_nodes(graph: &CudaGraph) -> (usize, usize) {
    use cudarc::driver::sys;
    let g = graph.cu_graph();
    let mut n = 0usize;
    // SAFETY: a null node array asks for the count only; `g` is a live graph.
    if unsafe { sys::cuGraphGetNodes(g, std::ptr::null_mut(), &mut n) } != sys::CUresult::CUDA_SUCCESS {
        return (0, 0);
    }
    let mut nodes = vec![std::ptr::null_mut(); n];
    // SAFETY: `nodes` has room for the `n` nodes the graph reported.
    if unsafe { sys::cuGraphGetNodes(g, nodes.as_mut_ptr(), &mut n) } != sys::CUresult::CUDA_SUCCESS {
        return (0, 0);
    }
    let kernels = nodes
        .iter()
        .take(n)
        .filter(|&&node| {
            let mut ty = CUgraphNodeType::CU_GRAPH_NODE_TYPE_EMPTY;
            // SAFETY: `node` belongs to the live graph.
            let got = unsafe { sys::cuGraphNodeGetType(node, &mut ty) };
            got == sys::CUresult::CUDA_SUCCESS && ty == CUgraphNodeType::CU_GRAPH_NODE_TYPE_KERNEL
        })
        .count();
    (kernels, n - kernels)
}

impl Drop for StepState {
    fn drop(&mut self) {
        if let Some(t) = &self.timing {
            t.log();
        }
    }
}

/// Counts of what the decode steps did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    pub steps: u64,
    pub captures: u64,
    pub replays: u64,
    /// Steps the caller had to run again without the hooks.
    pub reruns: u64,
}

fn mix(h: u64, v: u64) -> u64 {
    // FNV-1a over the value's 8 bytes, folded into one multiply per value.
    (h ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
}

const SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Recorded graphs kept at once (one per KV cache in use, in practice).
const MAX_GRAPHS: usize = 8;

/// The device address of a slice.
pub fn address<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (ptr, _sync) = s.device_ptr(stream);
    ptr
}

impl StepState {
    pub fn new(stream: &Arc<CudaStream>, graphs: bool) -> Result<Self, BackendError> {
        let params = stream.alloc_zeros::<i32>(2).map_err(launch_err(Op::Alloc))?;
        let base: CUdeviceptr = address(&params, stream);
        // SAFETY: both views lie inside `params`, which this state owns and drops after them
        // (fields drop in declaration order is not relied on: borrowed views never free).
        let token_dev = unsafe { DeviceBuf::borrowed(stream, base, 1) };
        let pos_dev = unsafe { DeviceBuf::borrowed(stream, base + 4, 1) };
        Ok(Self {
            mode: Mode::Off,
            graphs,
            disabled: false,
            plain: false,
            arena: Vec::new(),
            arena_ready: false,
            next_slot: 0,
            fingerprint: SEED,
            broken: None,
            rewarm: false,
            recorded: Vec::new(),
            capture_next: false,
            token: 0,
            pos: 0,
            params,
            token_dev,
            pos_dev,
            stats: StepStats::default(),
            epoch: 0,
            timing: std::env::var("WASM_CHORD_STEP_TIMING").is_ok_and(|v| v == "1").then(|| Timing::new(stream)),
        })
    }

    /// See the `epoch` field.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Advances the epoch: something outside `note` wrote or allocated device memory.
    pub fn bump(&mut self) {
        self.epoch += 1;
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn graphs(&self) -> bool {
        self.graphs && !self.disabled
    }

    /// Turns graph capture on or off (the recorded graph is dropped).
    pub fn set_graphs(&mut self, on: bool) {
        self.graphs = on;
        self.recorded.clear();
    }

    /// The step's token and position on the host (what the device buffer holds).
    pub fn token_pos(&self) -> (u32, usize) {
        (self.token, self.pos)
    }

    pub fn token_dev(&self) -> &CudaSlice<u32> {
        &self.token_dev
    }

    pub fn pos_dev(&self) -> &CudaSlice<i32> {
        &self.pos_dev
    }

    /// Mixes values an op depends on into the step's fingerprint.
    pub fn note(&mut self, op: Op, values: &[u64]) {
        self.epoch += 1;
        self.fingerprint(op, values);
    }

    /// Mixes values into the fingerprint without advancing the epoch: for arena slots, which
    /// are distinct within a step and written by nothing when taken, so the int8 activations of
    /// a tensor stay valid across them (a norm's, for the q, k and v matmuls after the
    /// allocation of their outputs).
    fn fingerprint(&mut self, op: Op, values: &[u64]) {
        if self.mode == Mode::Off {
            return;
        }
        let mut h = mix(self.fingerprint, op as u64);
        for &v in values {
            h = mix(h, v);
        }
        self.fingerprint = h;
    }

    /// Marks the step as impossible to record or replay; the caller runs it again.
    pub fn break_step(&mut self, why: impl Into<String>) {
        if self.broken.is_none() {
            self.broken = Some(why.into());
        }
    }

    /// An error for an op that cannot run inside a recorded step (an upload, a download).
    pub fn refuse(&mut self, op: Op, what: &str) -> BackendError {
        let why = format!("{op} {what} inside a decode step");
        self.break_step(why.clone());
        BackendError::Other { op, detail: why }
    }

    /// An error for an op that cannot be captured until an eager step has grown its scratch:
    /// the caller runs this step again, and the next one warms up before the capture.
    pub fn rewarm(&mut self, op: Op, what: &str) -> BackendError {
        let why = format!("{op}: {what}");
        self.rewarm = true;
        self.break_step(why.clone());
        BackendError::Other { op, detail: why }
    }

    /// The device buffer of `bytes` bytes for the step's next tensor; `None` outside a step.
    pub fn next_buffer(&mut self, stream: &Arc<CudaStream>, bytes: usize) -> Result<Option<CUdeviceptr>, BackendError> {
        if self.mode == Mode::Off {
            return Ok(None);
        }
        let i = self.next_slot;
        self.next_slot += 1;
        self.fingerprint(Op::Alloc, &[bytes as u64]);
        if let Some(slot) = self.arena.get(i).filter(|s| s.bytes == bytes) {
            return Ok(Some(address(&slot.buf, stream)));
        }
        if self.mode != Mode::Warmup {
            let why = format!("tensor {i} of the decode step has {bytes} bytes, the recorded one {:?}", self.arena.get(i).map(|s| s.bytes));
            self.break_step(why.clone());
            return Err(BackendError::Other { op: Op::Alloc, detail: why });
        }
        let buf = stream.alloc_zeros::<u8>(bytes.max(4)).map_err(launch_err(Op::Alloc))?;
        let ptr = address(&buf, stream);
        let slot = Slot { bytes, buf };
        if i < self.arena.len() {
            // Recorded graphs use the old buffer.
            self.recorded.clear();
            self.arena[i] = slot;
        } else {
            self.arena.push(slot);
        }
        Ok(Some(ptr))
    }

    /// Starts a step: writes `[token, pos]` to the device and picks how the step runs.
    pub fn begin(&mut self, stream: &Arc<CudaStream>, token: u32, pos: usize) -> Result<(), BackendError> {
        let op = Op::Transfer;
        if self.mode != Mode::Off {
            return Err(BackendError::Other { op, detail: "a decode step began inside another one".into() });
        }
        self.plain = self.disabled || !self.graphs;
        if self.plain {
            return Ok(());
        }
        if let Some(t) = &mut self.timing {
            let now = Instant::now();
            if let (true, Some((a, b))) = (t.pending, &t.events) {
                t.gpu_s += a.elapsed_ms(b).map_or(0.0, |ms| ms as f64 / 1e3);
                t.between_s += t.ended.map_or(0.0, |e| now.duration_since(e).as_secs_f64());
                t.pending = false;
                t.replays += 1;
                if t.replays % TIMING_EVERY == 0 {
                    t.log();
                }
            }
            t.begun = Some(now);
        }
        let pos32 = i32::try_from(pos).map_err(|_| BackendError::Shape { op, detail: format!("position {pos} exceeds i32") })?;
        let token32 = i32::from_ne_bytes(token.to_ne_bytes());
        stream.memcpy_htod(&[token32, pos32], &mut self.params).map_err(launch_err(op))?;
        self.token = token;
        self.pos = pos;
        self.next_slot = 0;
        self.fingerprint = SEED;
        self.broken = None;
        self.rewarm = false;
        self.stats.steps += 1;
        self.mode = if !self.recorded.is_empty() && !self.capture_next {
            Mode::Replay
        } else if self.arena_ready {
            match stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) {
                Ok(()) => Mode::Capture,
                Err(e) => {
                    tracing::warn!("CUDA graph capture could not start ({e}); decode steps run without graphs");
                    self.disabled = true;
                    self.plain = true;
                    return Ok(());
                }
            }
        } else {
            Mode::Warmup
        };
        Ok(())
    }

    /// Ends the step; `Ok(false)` when its ops did not run and the caller must run it again.
    pub fn end(&mut self, stream: &Arc<CudaStream>, forward_ok: bool) -> Result<bool, BackendError> {
        let op = Op::Transfer;
        let mode = std::mem::replace(&mut self.mode, Mode::Off);
        let slots = self.next_slot;
        match mode {
            Mode::Off if self.plain => {
                self.plain = false;
                Ok(true)
            }
            Mode::Off => Err(BackendError::Other { op, detail: "a decode step ended without beginning".into() }),
            Mode::Warmup => {
                if let Some(why) = self.broken.take() {
                    // An op that cannot take its position from the device: plain passes from now on.
                    tracing::warn!("decode steps run as plain passes ({why})");
                    self.disabled = true;
                    self.recorded.clear();
                    self.stats.reruns += 1;
                    return Ok(false);
                }
                self.arena_ready = forward_ok;
                Ok(true)
            }
            Mode::Capture => {
                // The capture must end whatever happened, or the stream stays in capture mode.
                let ended = stream.end_capture(CUgraphInstantiate_flags(0));
                if std::mem::take(&mut self.rewarm) {
                    let _ = stream.context().check_err();
                    tracing::debug!(why = ?self.broken.take(), "decode step needs a warm-up before its capture");
                    self.arena_ready = false;
                    self.stats.reruns += 1;
                    return Ok(false);
                }
                let graph = match (ended, forward_ok, self.broken.take()) {
                    (Ok(Some(graph)), true, None) => graph,
                    (Ok(_), false, None) => {
                        // The pass itself failed (a bad token, a full cache): the caller runs it
                        // again and reports that; graphs stay on.
                        self.stats.reruns += 1;
                        return Ok(false);
                    }
                    (ended, _, broken) => {
                        // A failed capture may leave an error recorded in the context: clear it.
                        let _ = stream.context().check_err();
                        let why = match (ended, broken) {
                            (_, Some(why)) => why,
                            (Err(e), None) => e.to_string(),
                            (Ok(_), None) => "the capture recorded nothing".into(),
                        };
                        tracing::warn!("CUDA graph capture of the decode step failed ({why}); decode steps run without graphs");
                        self.disabled = true;
                        self.stats.reruns += 1;
                        return Ok(false);
                    }
                };
                graph.launch().map_err(launch_err(op))?;
                if let Some(t) = &mut self.timing {
                    t.nodes = count_nodes(&graph);
                }
                if self.recorded.len() >= MAX_GRAPHS {
                    self.recorded.remove(0);
                }
                self.recorded.push(Recorded { graph, fingerprint: self.fingerprint, slots });
                self.capture_next = false;
                self.stats.captures += 1;
                Ok(true)
            }
            Mode::Replay => {
                let found = self.recorded.iter().position(|r| r.fingerprint == self.fingerprint && r.slots == slots);
                match (found, forward_ok, self.broken.take()) {
                    (Some(i), true, None) => {
                        let timed = self.timing.as_mut().map(|t| {
                            let now = Instant::now();
                            t.ops_s += t.begun.map_or(0.0, |b| now.duration_since(b).as_secs_f64());
                            if let Some((a, _)) = &t.events {
                                let _ = a.record(stream);
                            }
                            now
                        });
                        self.recorded[i].graph.launch().map_err(launch_err(op))?;
                        if let (Some(t), Some(start)) = (&mut self.timing, timed) {
                            if let Some((_, b)) = &t.events {
                                t.pending = b.record(stream).is_ok();
                            }
                            let now = Instant::now();
                            t.launch_s += now.duration_since(start).as_secs_f64();
                            t.ended = Some(now);
                        }
                        self.stats.replays += 1;
                        Ok(true)
                    }
                    (None, true, None) => {
                        // Another KV cache: record this session's step next time.
                        tracing::debug!("decode step matches no recorded graph; recording the next one");
                        self.capture_next = true;
                        self.stats.reruns += 1;
                        Ok(false)
                    }
                    (_, _, Some(why)) => {
                        // Another shape: warm up and record from scratch.
                        tracing::debug!(%why, "decode step cannot replay; recording again after a warm-up");
                        self.recorded.clear();
                        self.arena_ready = false;
                        self.stats.reruns += 1;
                        Ok(false)
                    }
                    (_, false, None) => {
                        // The pass itself failed; the caller runs it again and reports that.
                        self.stats.reruns += 1;
                        Ok(false)
                    }
                }
            }
        }
    }
}
