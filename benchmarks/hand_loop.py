"""The reference: a tight hand-written float32 NumPy training loop for a ReLU MLP.

Everything the practical limit needs and nothing else: one flat parameter buffer and one
flat gradient buffer (each weight a view), every activation and gradient buffer allocated
once, ``out=`` matmuls, the fused softmax + cross-entropy gradient, minibatches gathered
with ``np.take(..., mode="clip", out=)`` and an in-place optimizer step on the flat buffers. Like every
real loop (and like labnet and the PyTorch loop in this benchmark) it keeps the per-step
training loss, here in a preallocated array; it does not count training accuracy.

The optimizer arithmetic is the book's (and labnet's), so that results can be compared:
SGD ``p -= lr * g``; Adam ``m += (1-b1)(g-m); v += (1-b2)(g²-v);
p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+1e-7)``.
"""

from __future__ import annotations

import math

import numpy as np


class HandMLP:
    """A ReLU MLP ``sizes[0] -> ... -> sizes[-1]`` trained with softmax cross-entropy.

    ``weights`` is a list of ``(W, b)`` pairs to start from (copied into the flat buffer).
    """

    def __init__(self, weights: list[tuple[np.ndarray, np.ndarray]], batch_size: int, dtype=np.float32) -> None:
        self.dtype = np.dtype(dtype)
        sizes = [weights[0][0].shape[0]] + [w.shape[1] for w, _ in weights]
        total = sum(w.size + b.size for w, b in weights)
        self.flat_p = np.empty(total, self.dtype)
        self.flat_g = np.empty(total, self.dtype)
        self.W, self.b, self.dW, self.db = [], [], [], []
        offset = 0
        for w, b in weights:
            for src, plist, glist in ((w, self.W, self.dW), (b, self.b, self.db)):
                view = self.flat_p[offset : offset + src.size].reshape(src.shape)
                view[...] = src
                plist.append(view)
                glist.append(self.flat_g[offset : offset + src.size].reshape(src.shape))
                offset += src.size
        self.sizes, self.batch_size = sizes, batch_size
        bs = batch_size
        self.x = np.empty((bs, sizes[0]), self.dtype)
        self.y = np.empty(bs, np.int64)
        # h[i]: output of layer i after ReLU (the last one: scores / probabilities)
        self.h = [np.empty((bs, s), self.dtype) for s in sizes[1:]]
        self.dh = [np.empty((bs, s), self.dtype) for s in sizes[1:]]
        self.mask = [np.empty((bs, s), np.bool_) for s in sizes[1:-1]]
        self.rowmax = np.empty((bs, 1), self.dtype)
        self.rowsum = np.empty((bs, 1), self.dtype)
        self.rows = np.arange(bs)

    # -- one step ------------------------------------------------------------------------------
    def step_grads(self, k: int) -> float:
        """Forward and backward on the first ``k`` rows of ``self.x`` / ``self.y``; returns the loss."""
        full = k == self.batch_size
        x = self.x if full else self.x[:k]
        n_layers = len(self.W)
        a = x
        for i in range(n_layers):
            h = self.h[i] if full else self.h[i][:k]
            np.matmul(a, self.W[i], out=h)
            h += self.b[i]
            if i < n_layers - 1:
                np.maximum(h, 0, out=h)
            a = h
        # fused softmax + cross-entropy: loss from the shifted scores, gradient (p - onehot) / k
        s = a
        y = self.y if full else self.y[:k]
        rows = self.rows if full else self.rows[:k]
        mx = self.rowmax if full else self.rowmax[:k]
        sm = self.rowsum if full else self.rowsum[:k]
        np.max(s, axis=1, keepdims=True, out=mx)
        s -= mx
        picked = s[rows, y]
        np.exp(s, out=s)
        np.sum(s, axis=1, keepdims=True, out=sm)
        loss = (float(np.log(sm).sum()) - float(picked.sum())) / k
        sm *= k
        s /= sm
        s[rows, y] -= 1.0 / k
        d = s
        for i in range(n_layers - 1, -1, -1):
            below = x if i == 0 else (self.h[i - 1] if full else self.h[i - 1][:k])
            np.matmul(below.T, d, out=self.dW[i])
            np.sum(d, axis=0, out=self.db[i])
            if i == 0:
                break
            dprev = self.dh[i - 1] if full else self.dh[i - 1][:k]
            np.matmul(d, self.W[i].T, out=dprev)
            mask = self.mask[i - 1] if full else self.mask[i - 1][:k]
            np.greater(below, 0, out=mask)
            dprev *= mask
            d = dprev
        return loss

    # -- training ------------------------------------------------------------------------------
    def fit(self, x_all, y_all, epochs: int, rng: np.random.Generator, optimizer: dict) -> np.ndarray:
        """Train ``epochs`` epochs of shuffled minibatches (the last one partial); returns per-step losses."""
        n, bs = len(x_all), self.batch_size
        n_batches = -(-n // bs)
        losses = np.empty(epochs * n_batches)
        kind, lr = optimizer["name"], float(optimizer["lr"])
        p, g = self.flat_p, self.flat_g
        tmp = np.empty_like(p)
        if kind == "adam":
            b1, b2 = float(optimizer.get("beta1", 0.9)), float(optimizer.get("beta2", 0.999))
            m, v = np.zeros_like(p), np.zeros_like(p)
        t = 0
        for _ in range(epochs):
            order = rng.permutation(n)
            for b in range(n_batches):
                idx = order[b * bs : (b + 1) * bs]
                k = len(idx)
                if k == bs:
                    np.take(x_all, idx, axis=0, out=self.x, mode="clip")
                    np.take(y_all, idx, out=self.y, mode="clip")
                else:
                    np.take(x_all, idx, axis=0, out=self.x[:k], mode="clip")
                    np.take(y_all, idx, out=self.y[:k], mode="clip")
                losses[t] = self.step_grads(k)
                t += 1
                if kind == "sgd":
                    np.multiply(g, lr, out=tmp)
                    p -= tmp
                else:  # adam, the book's arithmetic
                    lr_t = lr * math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
                    np.subtract(g, m, out=tmp)
                    tmp *= 1 - b1
                    m += tmp
                    np.multiply(g, g, out=tmp)
                    tmp -= v
                    tmp *= 1 - b2
                    v += tmp
                    np.sqrt(v, out=tmp)
                    tmp += 1e-7
                    np.divide(m, tmp, out=tmp)
                    tmp *= lr_t
                    p -= tmp
        return losses

    def accuracy(self, x_all, y_all, batch_size: int = 10_000) -> float:
        correct = 0
        for i in range(0, len(x_all), batch_size):
            a = x_all[i : i + batch_size]
            for j, (w, b) in enumerate(zip(self.W, self.b, strict=True)):
                a = a @ w
                a += b
                if j < len(self.W) - 1:
                    np.maximum(a, 0, out=a)
            correct += int(np.count_nonzero(a.argmax(axis=1) == y_all[i : i + batch_size]))
        return correct / len(x_all)
