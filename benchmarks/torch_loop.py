"""The PyTorch CPU column: the same MLP, idiomatic and fast (no per-step ``.item()``).

Only imported when torch is installed; the benchmark skips this column otherwise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class TorchMLP:
    """``weights`` is the list of ``(W, b)`` pairs (labnet's layout, W of shape (n_in, n_out)) to start from."""

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]], batch_size: int) -> None:
        layers: list[torch.nn.Module] = []
        for i, (w, b) in enumerate(weights):
            lin = torch.nn.Linear(w.shape[0], w.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                lin.bias.copy_(torch.from_numpy(b))
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        self.batch_size = batch_size

    def fit(self, x_all, y_all, epochs: int, rng: np.random.Generator, optimizer: dict) -> np.ndarray:
        net, bs = self.net, self.batch_size
        x_t, y_t = torch.from_numpy(x_all), torch.from_numpy(y_all)
        n = len(x_all)
        n_batches = -(-n // bs)
        if optimizer["name"] == "sgd":
            opt = torch.optim.SGD(net.parameters(), lr=optimizer["lr"])
        else:
            betas = (optimizer.get("beta1", 0.9), optimizer.get("beta2", 0.999))
            opt = torch.optim.Adam(net.parameters(), lr=optimizer["lr"], betas=betas, eps=1e-7)
        losses = torch.empty(epochs * n_batches)
        t = 0
        net.train()
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(n))
            for b in range(n_batches):
                idx = order[b * bs : (b + 1) * bs]
                loss = F.cross_entropy(net(x_t.index_select(0, idx)), y_t.index_select(0, idx))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses[t] = loss.detach()
                t += 1
        return losses.numpy()

    def accuracy(self, x_all, y_all, batch_size: int = 10_000) -> float:
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_all), batch_size):
                scores = self.net(torch.from_numpy(x_all[i : i + batch_size]))
                correct += int((scores.argmax(dim=1).numpy() == y_all[i : i + batch_size]).sum())
        return correct / len(x_all)
