"""PyTorch's scaled_dot_product_attention on the flash bench's prefill shapes (causal, 32 heads x
128, bf16), timed with CUDA events: the baseline for crates/wasm-chord-cuda/benches/flash_bench.rs."""
import statistics

import torch
import torch.nn.functional as F

HEADS, DIM = 32, 128


def bench(fn, launches, repeats=7):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(launches):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / launches)
    return statistics.median(times)


print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
for seq in (2048, 8192, 32768):
    q, k, v = (torch.rand(1, HEADS, seq, DIM, device="cuda", dtype=torch.bfloat16) * 2 - 1 for _ in range(3))
    t = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), 2 if seq >= 32768 else 10)
    flops = 4 * seq * seq * HEADS * DIM / 2
    print(f"RESULT torch-sdpa seq {seq:>5} bf16 {t * 1e3:8.3f} ms {flops / t / 1e12:6.1f} TFLOP/s")
