"""The random streams of a noise model: seeds, per-device generators, frozen draws.

:class:`RandomStreams` is one of the bases of :class:`neurovar.noise.NoiseModule` (the
:mod:`neurovar.noise.models` docstring describes the contract). It holds everything that decides
*which* standard-normal numbers a module draws: the seed (or a user's
:class:`torch.Generator`), one generator per device created lazily from that seed, snapshots of
those streams (:meth:`RandomStreams.get_rng_state`), and the frozen draw replayed by
:meth:`RandomStreams.freeze`. The global torch RNG is never touched.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Self

import numpy as np
import torch

from neurovar._validation import InvalidParameterError, check_int

from .._torch import seed_from

__all__: list[str] = []


def seed_of(rng: Any, owner: str) -> int | None:
    """The seed an ``rng`` argument (None, int >= 0 or numpy Generator) stands for."""
    from neurovar._validation import check_rng

    check_rng(rng, name="rng", owner=owner)
    if isinstance(rng, (np.random.Generator, np.random.SeedSequence)):
        return seed_from(rng) >> 1  # 61 bits: a valid torch seed
    return None if rng is None else int(rng)


class RandomStreams:
    """Seeded per-device generators and frozen draws (a base of :class:`NoiseModule`).

    It expects the attributes set by ``NoiseModule.__init__`` (``seed``, ``_user_generator``,
    ``_generators``, ``_frozen``, ``_frozen_draw``) and a ``_draw_shapes(batch, d, p)`` method
    (the shapes of the standard-normal draws one forward needs).
    """

    # ------------------------------------------------------------------ randomness
    def manual_seed(self, seed: int) -> Self:
        """Reset the random stream(s) to ``seed`` (drops a user generator and frozen draws)."""
        self.seed = check_int(seed, name="seed", owner=type(self).__name__, low=0, allow_none=True)
        if self.seed is None:
            raise InvalidParameterError(
                "The 'seed' parameter of manual_seed must be an int. Got None."
            )
        self._user_generator = None
        self._generators = {}
        self._frozen_draw = None
        return self

    def get_rng_state(self) -> dict[str, Any]:
        """A snapshot of the module's random state, for :meth:`set_rng_state`.

        It holds the seed, the generator given as ``rng`` (the object, with a copy of its
        state), a copy of the state of every per-device generator, and the frozen draw.
        ``set_rng_state(get_rng_state())`` around any forwards makes the module draw again
        exactly what it drew after the snapshot.

        Returns
        -------
        dict
            Opaque; pass it to :meth:`set_rng_state`.
        """
        user = self._user_generator
        return {
            "seed": self.seed,
            "generator": user,
            "generator_state": None if user is None else user.get_state(),
            "streams": {key: gen.get_state() for key, gen in self._generators.items()},
            "frozen_draw": self._frozen_draw,
        }

    def set_rng_state(self, state: dict[str, Any]) -> Self:
        """Restore a snapshot taken by :meth:`get_rng_state` (in place; returns ``self``).

        A generator given as ``rng`` is set back to its saved state too (it may be shared with
        other modules or with the caller, who then see it rewound as well).
        """
        keys = {"seed", "generator", "generator_state", "streams", "frozen_draw"}
        if not isinstance(state, dict) or set(state) != keys:
            raise TypeError(
                f"The 'state' parameter of {type(self).__name__}.set_rng_state must be a dict "
                f"returned by get_rng_state(). Got {type(state).__name__} instead."
            )
        self.seed = state["seed"]
        self._user_generator = state["generator"]
        if state["generator"] is not None:
            state["generator"].set_state(state["generator_state"])
        generators = {}
        for key, stream in state["streams"].items():
            gen = torch.Generator(device=key)
            gen.set_state(stream)
            generators[key] = gen
        self._generators = generators
        self._frozen_draw = state["frozen_draw"]
        return self

    @property
    def generator(self) -> torch.Generator | None:
        """The :class:`torch.Generator` given as ``rng`` (shared, not copied), or None.

        None when the module draws from its own per-device generators seeded with
        :attr:`seed`. ``generator if generator is not None else seed`` is the ``rng`` argument
        that builds a module drawing from the same source (the controls of
        :mod:`neurovar.noise.controls` pass it on).
        """
        return self._user_generator

    def clone(self) -> Self:
        """A deep copy whose draws restart from the same seed.

        Buffers, parameters, scale, running estimates and the frozen state are copied; the
        per-device generators are not, so the copy draws what a fresh module built with the same
        seed draws, and the original's streams are left where they are. A generator given as
        ``rng`` is shared, not copied (CUDA generators cannot be deep-copied): the copy and the
        original then draw from the one stream.

        Returns
        -------
        NoiseModule
            A new module of the same class.
        """
        gens, user = self._generators, self._user_generator
        self._generators, self._user_generator = {}, None
        try:
            out = copy.deepcopy(self)
        finally:
            self._generators, self._user_generator = gens, user
        out._user_generator = user
        return out

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._user_generator is not None:
            return self._user_generator
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed)
            self._generators[key] = gen
        return gen

    def _randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        gen = self._generator(like.device)
        dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
        z = torch.randn(shape, generator=gen, device=gen.device, dtype=dtype)
        return z.to(device=like.device, dtype=like.dtype)

    # ------------------------------------------------------------------ frozen noise
    def freeze(self) -> Self:
        """Replay one draw: the next forward draws the noise, later forwards reuse it.

        The replayed quantity is the standard-normal draw, so the noise of
        :class:`PoissonLikeNoise` still follows its input. A forward with a different
        layout (batch size, shape) while frozen raises an error; call :meth:`unfreeze` or
        :meth:`freeze` again to draw anew.
        """
        self._frozen = True
        self._frozen_draw = None
        return self

    def unfreeze(self) -> Self:
        """Go back to fresh draws on every forward."""
        self._frozen = False
        self._frozen_draw = None
        return self

    @property
    def frozen(self) -> bool:
        """Whether the module replays one draw (see :meth:`freeze`)."""
        return self._frozen

    @contextlib.contextmanager
    def freezing(self) -> Iterator[Self]:
        """Context manager: :meth:`freeze` inside the block, the previous frozen state after it.

        The first forward inside the block draws the noise, later ones replay it. On exit,
        also after an exception, the module is frozen or not as before the block, with the draw
        it replayed before (if any), so blocks nest: an inner block draws anew and the outer
        block's draw is replayed again after it. :func:`neurovar.noise.frozen_noise` freezes
        several modules this way.

        Yields
        ------
        NoiseModule
            The module itself.
        """
        saved = (self._frozen, self._frozen_draw)
        try:
            self.freeze()
            yield self
        finally:
            self._frozen, self._frozen_draw = saved

    # ------------------------------------------------------------------ draws
    def _draws(self, x: torch.Tensor, batch: int, d: int, p: int) -> tuple[torch.Tensor, ...]:
        shapes = self._draw_shapes(batch, d, p)
        if self._frozen and self._frozen_draw is not None:
            cached = self._frozen_draw
            if [tuple(z.shape) for z in cached] != shapes:
                raise ValueError(
                    f"{type(self).__name__} is frozen with a draw for layer output shape "
                    f"{[tuple(z.shape) for z in cached]} (batch, units, positions), but got "
                    f"{shapes}. Call unfreeze() or freeze() again to draw anew."
                )
            return tuple(z.to(device=x.device, dtype=x.dtype) for z in cached)
        draws = tuple(self._randn(s, x) for s in shapes)
        if self._frozen:
            self._frozen_draw = draws
        return draws
