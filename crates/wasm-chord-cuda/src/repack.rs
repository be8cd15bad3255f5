//! Device layouts that differ from the file's, made once at upload: blocks whose size is not a
//! multiple of 16 bytes are split so that the matvec reads their quant bytes with aligned
//! 16-byte loads (kernels/dequant.cuh, `Q6_K_R`).

use wasm_chord_core::TensorType;

/// The device layout of a weight's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The file's blocks, in order, each row zero-padded to 16 bytes.
    File,
    /// Q6_K split per row: every block's ql and qh (192 bytes each), then every block's 16
    /// scales, then every block's f16 d (kernel type `q6_K_r`).
    Q6KSplit,
}

const Q6K_BYTES: usize = 210;
const Q6K_QUANTS: usize = 192;
const Q6K_SCALES: usize = 16;

impl Layout {
    /// The layout the int8 matvec prefers for `ty` (`File` where the blocks are already
    /// 16-byte multiples or no kernel reads another layout).
    pub fn preferred(ty: TensorType) -> Layout {
        match ty {
            TensorType::Q6_K => Layout::Q6KSplit,
            _ => Layout::File,
        }
    }

    /// The type name in the kernels' names (`mmvq_<name>`, `dequant_f16_<name>`, `embed_<name>`).
    pub fn kernel_type(self, ty: TensorType) -> &'static str {
        match self {
            Layout::File => ty.name(),
            Layout::Q6KSplit => "q6_K_r",
        }
    }

    /// Writes one file row (`src`: whole blocks of the layout's type) into `dst` (same length)
    /// in this layout.
    pub fn pack_row(self, src: &[u8], dst: &mut [u8]) {
        match self {
            Layout::File => dst.copy_from_slice(src),
            Layout::Q6KSplit => {
                let nb = src.len() / Q6K_BYTES;
                let (quants, rest) = dst.split_at_mut(nb * Q6K_QUANTS);
                let (scales, ds) = rest.split_at_mut(nb * Q6K_SCALES);
                for (b, block) in src.chunks_exact(Q6K_BYTES).enumerate() {
                    quants[b * Q6K_QUANTS..][..Q6K_QUANTS].copy_from_slice(&block[..Q6K_QUANTS]);
                    scales[b * Q6K_SCALES..][..Q6K_SCALES].copy_from_slice(&block[Q6K_QUANTS..Q6K_QUANTS + Q6K_SCALES]);
                    ds[b * 2..][..2].copy_from_slice(&block[Q6K_QUANTS + Q6K_SCALES..]);
                }
            }
        }
    }
}
