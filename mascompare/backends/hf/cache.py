"""The KV cache a batch shares, and its layout: rows joined, refilled and compacted.

The eager path keeps keys and values in transformers' dynamic caches; the fast path in static caches of a fixed
number of columns (a power of two), rewritten in place, so that its compiled one-token steps keep one shape and
their inputs' addresses.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import torch
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer, StaticLayer, StaticSlidingWindowLayer

MIN_STATIC_COLUMNS = 64  # static caches come in powers of two from here, so that few shapes are ever compiled


def static_columns(needed: int) -> int:
    """Columns of a static cache that holds `needed`: the next power of two, at least MIN_STATIC_COLUMNS."""
    return max(MIN_STATIC_COLUMNS, 1 << (needed - 1).bit_length())


def right_aligned(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Keys or values [B, heads, columns, head_dim] padded with zeros on the left to `width` columns (a copy)."""
    return torch.nn.functional.pad(tensor, (0, 0, width - tensor.shape[-2], 0))


@dataclass
class SharedCache:
    """One KV cache for a whole batch, and the bookkeeping that keeps batching exact.

    Every segment appended to the cache is left-padded to a common width, so rows hold padding
    at different columns. `mask` remembers, per row, which columns are real (1) or padding (0);
    every later forward pass attends through it, so padding never enters any row's attention.
    `next_position` counts each row's real tokens, so RoPE positions ignore padding too: a row's
    positions are exactly those it would have at batch size 1.
    """

    cache: DynamicCache | StaticCache
    mask: torch.Tensor  # [B, length] long: 1 where the row has a real token
    next_position: torch.Tensor  # [B] long: the position of each row's next token

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    @property
    def static(self) -> bool:
        return isinstance(self.cache, StaticCache)

    def contents(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values per layer, [B, heads, length, head_dim]: the filled part of a static cache."""
        if self.length == 0:
            return []
        return [(layer.keys[:, :, :self.length], layer.values[:, :, :self.length]) for layer in self.cache.layers]

    def real_positions(self, visible: torch.Tensor | None = None) -> list[int]:
        """Per row, how many real cache positions it can attend to (through `visible` if given)."""
        mask = self.mask if visible is None else self.mask * visible
        return mask.sum(dim=1).tolist()


class CacheLayout:
    """Makes and lays out the shared caches of one model: static ones when `static` (the fast path), else dynamic."""

    def __init__(self, config, device: torch.device, static: bool):
        self.config, self.device, self.static = config, device, static
        layers = DynamicCache(config=config).layers
        # the shortest attention window of the model's layers, or None when every layer sees everything
        self.sliding_window = min((layer.sliding_window for layer in layers
                                   if getattr(layer, "sliding_window", None)), default=None)
        self.full_layers_only = all(type(layer) is DynamicLayer for layer in layers)

    def new(self, batch_size: int, first_positions: list[int] | None = None,
            static: bool | None = None) -> SharedCache:
        """An empty cache; each row's positions start at 0, or at `first_positions`. `static` overrides the
        layout's kind."""
        empty = torch.zeros((batch_size, 0), dtype=torch.long, device=self.device)
        start = torch.tensor(first_positions or [0] * batch_size, dtype=torch.long, device=self.device)
        return SharedCache(self.holding([], 0, self.static if static is None else static), empty, start)

    @torch.inference_mode()
    def holding(self, contents: list[tuple[torch.Tensor, torch.Tensor]], room: int, static: bool):
        """A KV cache holding `contents` (keys and values per layer); a static one with room for `room` more
        columns. Made in inference mode wherever it is called from, as the forward passes that fill a cache are: a
        compiled step's guards tell tensors made in and out of it apart, and would compile the step again."""
        length = contents[0][0].shape[-2] if contents else 0
        if static:
            columns = static_columns(length + room)
            cache = StaticCache(config=self.config, max_cache_len=columns)
            # every layer holds every column; a sliding-window layer's window is then applied by the model's
            # mask, over columns, as a sliding-window cache would (the rules for batching with a window hold)
            cache.layers = [StaticLayer(max_cache_len=columns) if isinstance(layer, StaticSlidingWindowLayer)
                            else layer for layer in cache.layers]
        else:
            cache = DynamicCache(config=self.config)
        for index, (keys, values) in enumerate(contents):
            cache.layers[index].update(keys, values)
        return cache

    def make_room(self, state: SharedCache, columns: int) -> None:
        """A static cache too small for `columns` more is copied into a larger one (a power of two in size)."""
        if state.static and state.length + columns > state.cache.get_max_length():
            state.cache = self.holding(state.contents(), columns, static=True)

    def relayout(self, state: SharedCache, live: list[bool], arrivals: SharedCache | None = None,
                 slots: list[int] = (), visible: torch.Tensor | None = None) -> torch.Tensor | None:
        """Lay the state out anew: the rows of `arrivals` in place of rows `slots`, right-aligned at the end,
        with hidden columns before them (columns are added before every row where an arrival is longer than
        the cache); then the leading columns that no `live` row attends to are dropped, so the cache does not
        grow without bound. A static cache is rewritten in place (its compiled steps keep their inputs'
        addresses). Returns `visible` laid out alike."""
        width = max(state.length, arrivals.length if arrivals else 0)
        added = width - state.length
        mask = torch.nn.functional.pad(state.mask, (added, 0))
        positions = state.next_position.clone()
        if arrivals:
            mask[slots] = torch.nn.functional.pad(arrivals.mask, (width - arrivals.length, 0))
            positions[slots] = arrivals.next_position
        attended = mask[torch.tensor(live, device=self.device)].any(dim=0)
        start = int(attended.int().argmax())  # the first column a live row attends to

        def laid_out(old: torch.Tensor, new: torch.Tensor | None) -> torch.Tensor:
            tensor = right_aligned(old, width)  # a sliding-window layer holds only its window's columns
            if new is not None:
                tensor[slots] = right_aligned(new, width)
            return tensor[:, :, start:]

        incoming = arrivals.contents() if arrivals else repeat((None, None))
        contents = ((laid_out(keys, new_keys), laid_out(values, new_values))
                    for (keys, values), (new_keys, new_values) in zip(state.contents(), incoming))
        length = width - start
        if state.static:
            for layer, (keys, values) in zip(state.cache.layers, contents):
                layer.keys[:, :, :length].copy_(keys)
                layer.values[:, :, :length].copy_(values)
                layer.cumulative_length.fill_(length)  # where the next step writes
        else:
            state.cache = self.holding(list(contents), 0, static=False)
        state.mask, state.next_position = mask[:, start:], positions
        if visible is None:
            return None
        return torch.nn.functional.pad(visible, (added, 0))[:, start:]

    def join_rows(self, state: SharedCache, groups: int) -> SharedCache:
        """A cache of groups × B rows, made into B rows: row block g becomes the g-th run of columns of each row.

        Independent agents run side by side as extra rows (one forward pass for all of them), then hand
        on one cache per sample, as if they had run one after another, each seeing only its own columns.
        The caller sets their positions to count on from one block to the next.
        """
        def side_by_side(tensor: torch.Tensor, dim: int) -> torch.Tensor:
            return torch.cat(tensor.unflatten(0, (groups, -1)).unbind(0), dim=dim)
        joined = [(side_by_side(keys, -2), side_by_side(values, -2)) for keys, values in state.contents()]
        # the last block's positions are the latest: the caller made them count on from the earlier blocks
        return SharedCache(self.holding(joined, 0, self.static), side_by_side(state.mask, -1),
                           state.next_position.unflatten(0, (groups, -1))[-1])

    def padding_could_pass_window(self, segment_lengths: list[list[int]], appended: int) -> bool:
        """Whether a batch's cache could hold padding between a row's tokens and grow past a sliding
        window. A window counts cache columns, padding included, so such a row would see fewer of its
        own tokens than alone. `segment_lengths`: per segment appended left-padded, each row's length;
        `appended`: positions added after them without padding (latent steps, decoded tokens). The first
        segment's padding lies before all of a row's tokens and never displaces any of them (one padded
        prompt, as in `chat`, is exact)."""
        padded = any(len(set(lengths)) > 1 for lengths in segment_lengths[1:])
        window = self.sliding_window
        return window is not None and padded and sum(map(max, segment_lengths)) + appended > window
