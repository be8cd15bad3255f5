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
//! (warm-up again). A failed capture, or an op with no device-position kernel (a q8_0 cache),
//! turns steps off for the backend (with a warning): plain passes from then on, as with graphs
//! off (`WASM_CHORD_CUDA_GRAPH=0`) and at positions past `MAX_STEP_POS`, where the
//! flash-decoding kernels (host-side positions) beat the step's one-block-per-head attention.

use std::sync::Arc;

use cudarc::driver::sys::{CUdeviceptr, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaSlice, CudaStream, DevicePtr};
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
    /// Something in the step cannot read its position from the device (a q8_0 cache, say), or
    /// a capture failed: steps run as plain passes from then on.
    disabled: bool,
    /// The current step runs as a plain pass (graphs off, or a position past `MAX_STEP_POS`).
    plain: bool,
    arena: Vec<Slot>,
    arena_ready: bool,
    next_slot: usize,
    fingerprint: u64,
    /// Why this step cannot be recorded or replayed, once something says so.
    broken: Option<String>,
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
    /// Counts ops (every `note`, in or out of steps) and new tensors (`bump`): two moments with
    /// the same count have no op between them (the int8 matvec reuses quantized activations).
    epoch: u64,
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

/// Positions past this run as plain passes (see `begin`).
pub const MAX_STEP_POS: usize = 1024;

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
            recorded: Vec::new(),
            capture_next: false,
            token: 0,
            pos: 0,
            params,
            token_dev,
            pos_dev,
            stats: StepStats::default(),
            epoch: 0,
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

    /// The device buffer of `bytes` bytes for the step's next tensor; `None` outside a step.
    pub fn next_buffer(&mut self, stream: &Arc<CudaStream>, bytes: usize) -> Result<Option<CUdeviceptr>, BackendError> {
        if self.mode == Mode::Off {
            return Ok(None);
        }
        let i = self.next_slot;
        self.next_slot += 1;
        self.note(Op::Alloc, &[bytes as u64]);
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
        // Plain passes when graphs are off, and at long contexts, where attention dominates and
        // the flash-decoding kernels (host-side positions, not capturable yet) beat the step's
        // one-block-per-head attention.
        self.plain = self.disabled || !self.graphs || pos > MAX_STEP_POS;
        if self.plain {
            return Ok(());
        }
        let pos32 = i32::try_from(pos).map_err(|_| BackendError::Shape { op, detail: format!("position {pos} exceeds i32") })?;
        let token32 = i32::from_ne_bytes(token.to_ne_bytes());
        stream.memcpy_htod(&[token32, pos32], &mut self.params).map_err(launch_err(op))?;
        self.token = token;
        self.pos = pos;
        self.next_slot = 0;
        self.fingerprint = SEED;
        self.broken = None;
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
                        self.recorded[i].graph.launch().map_err(launch_err(op))?;
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
