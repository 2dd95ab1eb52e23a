"""The PyTorch baseline for `cargo bench --bench train -- gpu` (docs/benchmarks.md): the same
model (MLP 256-512-512-2, ReLU, softmax cross-entropy), optimizer (Adam, lr 1e-3), batch size
(256) and kind of data (standard-normal features, labels from a fixed random projection), on
the same GPU. Like Sluice's GPU path, the table is put on the device once and each epoch
gathers its batches from a shuffled row order there. Rows per second are taken from the
epochs after the first.

    python3 benches/train_torch.py [rows] [epochs]     (defaults 1000000, 3)
"""
import sys
import time

import torch


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    features, batch = 256, 256
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(1)
    w = torch.randn(features, device=device)
    x = torch.randn(rows, features, device=device)
    y = (x @ w > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(features, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 2),
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    times, losses = [], []
    for _ in range(epochs):
        order = torch.randperm(rows, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        total = torch.zeros((), device=device)
        for s in range(0, rows, batch):
            idx = order[s : s + batch]
            xb, yb = x[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        mean = (total / rows).item()  # waits for the device, as Sluice's epoch does
        times.append(time.perf_counter() - start)
        losses.append(mean)
    timed = times[1:] if len(times) > 1 else times
    per_sec = rows / (sum(timed) / len(timed))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"pytorch {torch.__version__} on {name}: {rows} rows x {features}, MLP 256-512-512-2, batch {batch}: "
        f"epochs {' / '.join(f'{t:.3f}' for t in times)} s, losses {' / '.join(f'{l:.4f}' for l in losses)}; "
        f"{per_sec:.0f} rows/s"
    )


if __name__ == "__main__":
    main()
