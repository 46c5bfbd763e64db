"""Tensors between neighbouring pipeline stages over torch.distributed point-to-point
(gloo on the CPU, NCCL on CUDA).

A transfer is one message: a fixed-size int64 header, then the tensors' bytes (64-byte
aligned). The header carries each tensor's dtype, shape and requires_grad, so activations of
any dtype and shape can follow one another (a new sequence length needs nothing from the
user), and a status: a stage that fails sends FAILED headers to its neighbours, which raise
at their next receive from it and pass the failure on, instead of waiting forever.

Both ends remember the layout of the last transfer between them (at first: no tensors, a
bare header). A receiver posts a message of the remembered layout's size (tag 0); a sender
whose tensors have that layout sends exactly that: one message, as with a fixed layout. On a
change the sender sends the first bytes of the new message at the old size on tag 0 (the
receiver learns the new layout from its header) and the whole message on tag 1, which the
receiver then posts.

Consecutive transfers of one step are posted together (batch_isend_irecv), tag 0 first, then
the renegotiated ones: a stage that sends to a neighbour while that neighbour sends to it
(1F1B's steady state) never waits on its own send first (on NCCL, where a send blocks until
received, posting them one by one would deadlock).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

HEADER_SLOTS = 64
OK, FAILED = 0, 1
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2)


class PeerFailed(RuntimeError):
    """A neighbouring stage failed; `rank` is the rank that failed first."""

    def __init__(self, rank: int) -> None:
        super().__init__(f"pipeline rank {rank} failed")
        self.rank = rank


def encode(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    slots = [OK, len(tensors)]
    for tensor in tensors:
        if tensor.dtype not in DTYPES:
            raise TypeError(f"a pipeline stage's output has dtype {tensor.dtype}, which cannot be sent between stages "
                            f"(supported: {', '.join(str(d).replace('torch.', '') for d in DTYPES)})")
        slots += [DTYPES.index(tensor.dtype), int(tensor.requires_grad), tensor.dim(), *tensor.shape]
    if len(slots) > HEADER_SLOTS:
        raise ValueError(f"a pipeline stage's output ({len(tensors)} tensors, shapes "
                         f"{[tuple(t.shape) for t in tensors]}) needs a {len(slots)}-slot header, more than the "
                         f"{HEADER_SLOTS} a transfer carries: pass fewer tensors between stages")
    return torch.tensor(slots + [0] * (HEADER_SLOTS - len(slots)), dtype=torch.int64, device=device)


def failure_header(rank: int, device: torch.device) -> torch.Tensor:
    header = torch.zeros(HEADER_SLOTS, dtype=torch.int64, device=device)
    header[0], header[1] = FAILED, rank
    return header


def decode(header: torch.Tensor) -> list[tuple[torch.Size, torch.dtype, bool]]:
    slots = header.tolist()
    if slots[0] == FAILED:
        raise PeerFailed(slots[1])
    metas, position = [], 2
    for _ in range(slots[1]):
        dtype, requires_grad, ndim = slots[position:position + 3]
        shape = torch.Size(slots[position + 3:position + 3 + ndim])
        metas.append((shape, DTYPES[dtype], bool(requires_grad)))
        position += 3 + ndim
    return metas


Meta = list[tuple[torch.Size, torch.dtype, bool]]
SAME_LAYOUT, NEW_LAYOUT = 0, 1  # the tags messages travel on
ALIGNMENT = 64
HEADER_BYTES = HEADER_SLOTS * 8


def layout(tensors: list[torch.Tensor]) -> Meta:
    return [(t.shape, t.dtype, t.requires_grad) for t in tensors]


def _offsets(meta: Meta) -> tuple[list[int], int]:
    """Each tensor's byte offset in a message of this layout, and the message's size."""
    offsets, position = [], HEADER_BYTES
    for shape, dtype, _ in meta:
        offsets.append(position)
        position += -(-shape.numel() * dtype.itemsize // ALIGNMENT) * ALIGNMENT
    return offsets, position


class Transfers:
    """Sends and receives of one stage. Sends complete in the background; their messages are
    kept until flush() (the end of a batch) so nothing is freed while on the wire."""

    def __init__(self, device: torch.device, wire_device: torch.device, early_receives: bool) -> None:
        # device: where received tensors go; wire_device: where messages live (the backend's)
        self.device, self.wire_device = device, wire_device
        # gloo runs each transfer on its own: a receive posted ahead lets the message land while
        # this stage computes. NCCL queues a pair's transfers in order, so a receive posted ahead
        # would hold up this stage's next send to the same peer: there receives are posted when due.
        self.early_receives = early_receives
        self.expected: dict[int, int] = {}  # peer -> receives from it still to come this batch
        self.early: dict[int, tuple] = {}  # peer -> (work, message) posted ahead
        self.pending: list = []  # (send work, message) of this batch
        self.sent: dict[int, Meta] = {}  # peer -> the layout of the last transfer to it
        self.received: dict[int, Meta] = {}  # peer -> ... from it
        self.failures: list = []  # failure messages in flight: kept, never waited for

    def _message(self, size: int) -> torch.Tensor:
        return torch.empty(size, dtype=torch.uint8, device=self.wire_device)

    def pack(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        meta = layout(tensors)
        offsets, size = _offsets(meta)
        message = self._message(size)
        message[:HEADER_BYTES].copy_(encode(tensors, self.wire_device).view(torch.uint8))
        for tensor, offset in zip(tensors, offsets):
            nbytes = tensor.numel() * tensor.element_size()
            message[offset:offset + nbytes].copy_(tensor.detach().contiguous().view(-1).view(torch.uint8))
        return message

    def exchange(self, sends: list[tuple[int, list[torch.Tensor]]], receives: list[int]) -> list[list[torch.Tensor]]:
        """Send each (peer, tensors), receive one transfer from each peer in receives;
        returns the received tensors (requires_grad as the sender's), in receives' order."""
        first, second = [], []
        for peer, tensors in sends:
            meta, message = layout(tensors), self.pack(tensors)
            known = self.sent.get(peer, [])
            if meta == known:
                first.append((dist.isend, message, peer, SAME_LAYOUT))
            else:
                first.append((dist.isend, self._resized(message, _offsets(known)[1]), peer, SAME_LAYOUT))
                second.append((dist.isend, message, peer, NEW_LAYOUT))
                self.sent[peer] = meta
        early = [self.early.pop(peer, None) for peer in receives]
        posted = [posted[1] if posted else self._message(_offsets(self.received.get(peer, []))[1])
                  for peer, posted in zip(receives, early)]
        first += [(dist.irecv, message, peer, SAME_LAYOUT) for peer, message, ahead in zip(receives, posted, early)
                  if ahead is None]
        self._run(first)
        for ahead in early:
            if ahead is not None:
                ahead[0].wait()
        messages = []
        for peer, message in zip(receives, posted):
            meta = decode(message[:HEADER_BYTES].view(torch.int64))
            if meta != self.received.get(peer, []):
                message = self._message(_offsets(meta)[1])
                second.append((dist.irecv, message, peer, NEW_LAYOUT))
                self.received[peer] = meta
            messages.append(message)
        self._run(second)
        for peer in receives:
            self.expected[peer] = self.expected.get(peer, 1) - 1
            if self.expected[peer] > 0:
                self._post_ahead(peer)
        return [self.unpack(message, self.received[peer]) for peer, message in zip(receives, messages)]

    def expect(self, counts: dict[int, int]) -> None:
        """This batch receives counts[peer] transfers from each peer: post the first ones ahead."""
        self.expected = dict(counts)
        for peer, count in counts.items():
            if count > 0:
                self._post_ahead(peer)

    def _post_ahead(self, peer: int) -> None:
        if self.early_receives:
            message = self._message(_offsets(self.received.get(peer, []))[1])
            self.early[peer] = (dist.irecv(message, peer, tag=SAME_LAYOUT), message)

    def _resized(self, message: torch.Tensor, size: int) -> torch.Tensor:
        """The message cut or zero-padded to `size` bytes (its header first either way)."""
        if size <= message.numel():
            return message[:size]
        longer = torch.zeros(size, dtype=torch.uint8, device=self.wire_device)
        longer[:message.numel()].copy_(message)
        return longer

    def unpack(self, message: torch.Tensor, meta: Meta) -> list[torch.Tensor]:
        tensors = []
        for (shape, dtype, requires_grad), offset in zip(meta, _offsets(meta)[0]):
            nbytes = shape.numel() * dtype.itemsize
            tensor = message[offset:offset + nbytes].view(dtype).view(shape).detach().to(self.device)
            if requires_grad and (dtype.is_floating_point or dtype.is_complex):
                tensor.requires_grad_()
            tensors.append(tensor)
        return tensors

    def _run(self, ops) -> None:
        """Post the ops together; wait for the receives (sends finish in the background)."""
        if not ops:
            return
        works = dist.batch_isend_irecv([dist.P2POp(op, message, peer, tag=tag) for op, message, peer, tag in ops])
        for (op, message, _, _), work in zip(ops, works):
            if op is dist.isend:
                self.pending.append((work, message))
        for (op, _, _, _), work in zip(ops, works):
            if op is not dist.isend:
                work.wait()

    def fail(self, peers: list[int], rank: int) -> None:
        """Tell the neighbours this stage failed, in a message of the size each one has
        posted (not waited for: they may never receive it)."""
        for peer in peers:
            message = torch.zeros(_offsets(self.sent.get(peer, []))[1], dtype=torch.uint8, device=self.wire_device)
            message[:HEADER_BYTES].copy_(failure_header(rank, self.wire_device).view(torch.uint8))
            self.failures.append((dist.isend(message, peer, tag=SAME_LAYOUT), message))

    def flush(self) -> None:
        """Wait for this batch's sends (their receivers have them by now) and let them go."""
        for work, _ in self.pending:
            work.wait()
        self.pending = []
