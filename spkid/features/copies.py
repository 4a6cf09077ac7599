"""Waveform augmentation done by `features`: augmented copies of the training utterances,
stored in the shards beside the clean features so they are versioned like any other data.

Only training utterances get copies. Which ones train is the `index` step's split, a pure
function of the clean catalog and the split params, so `features` computes the same split
(`spkid.data.views.split_views`) and copies each train view: the whole utterance, or with
`split_by: time` only the training part of the recording. A copy is stored with role
"augment" under the id `<view id>~<tag>`; `index` keeps it only while its view still trains.

Kinds (WeSpeaker's recipe, with everything generated here instead of downloaded):
    speed   a copy at each factor of `speed` (0.9, 1.1: pitch and tempo change together),
            labelled as a new speaker `<speaker>~sp<factor>`, since the voice changes;
    reverb  convolution with a room impulse response drawn from statistical room
            acoustics: a direct path, then exponentially decaying noise whose RT60 is drawn
            from `rt60` and whose level follows the room's critical distance (a seeded room
            of 3-10 m by 3-10 m by 2.5-4 m, the talker 0.5 m to half the room away);
    noise   a recording from `noise_dir` at an SNR from `snr_db`, or, without a folder,
            babble: 3 to 7 other training speakers at an SNR from `babble_snr_db`.
Copy k of an utterance (and of each speed copy) is of kind kinds[k % len(kinds)]. Every
random choice comes from a generator seeded by `seed` and the copy's id, so a copy is the
same whichever worker, machine or order makes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from spkid.core.errors import DataError
from spkid.core.seeding import name_seed
from spkid.data.audio import find_noise, read_audio
from spkid.data.views import AUGMENT, SEPARATOR, SplitConfig, speed_copy_name, split_views
from spkid.features.waveform import (add_noise, change_speed, looped_crop, reverberate,
                                     room_impulse_response, unit_power)

BABBLE_SPEAKERS = (3, 7)


@dataclass(frozen=True)
class Span:
    """Samples [first, last) of a manifest row's decoded audio (last None = to its end)."""
    row: object  # spkid.data.manifest.ManifestRow
    first: int = 0
    last: int | None = None


@dataclass(frozen=True)
class AugmentedCopy:
    """One stored copy: what `features` decodes and transforms in place of a manifest row."""
    utterance_id: str
    speaker: str
    source: Span
    duration: float  # seconds, to batch similar lengths as manifest rows are
    seed: tuple
    speed: float = 1.0
    kind: str | None = None
    noise_path: str | None = None
    babble: tuple = ()  # Spans of other speakers' training audio
    role: str = AUGMENT


@dataclass(frozen=True)
class Levels:
    """The ranges a copy's room and noise are drawn from (picklable, for feature workers)."""
    rt60: tuple[float, float]
    snr_db: tuple[float, float]
    babble_snr_db: tuple[float, float]

    @classmethod
    def from_params(cls, a) -> "Levels":
        return cls(tuple(a.rt60), tuple(a.snr_db), tuple(a.babble_snr_db))


def enabled(a) -> bool:
    """Whether params `features.augment` ask for any copies."""
    return bool(a.copies or a.speed)


def _seed(seed: int, name: str) -> tuple:
    # A copy's randomness depends on its id only, not on the order copies are planned in.
    return (seed, name_seed(name))


def plan_copies(views: list[dict], rows: dict, a, *, hop_length: int, sample_rate: int,
                noise_files: list[str]) -> list[AugmentedCopy]:
    """The copies params `a` (features.augment) ask for, for the train views of a split
    (spkid.data.views.split_views); rows: the manifest rows by utterance id. A view named as its
    utterance is the whole utterance; any other is the sample span of its frames."""
    # Sorted, so that babble picks do not depend on the order views come in.
    train = sorted((v for v in views if v["role"] == "train" and v["num_frames"] > 0),
                   key=lambda v: v["utterance_id"])
    by_speaker: dict[str, list[Span]] = {}
    spans = {}
    for v in train:
        row = rows[v["source_id"]]
        if v["utterance_id"] == v["source_id"]:
            span = Span(row)
        else:
            span = Span(row, v["start_frame"] * hop_length,
                        (v["start_frame"] + v["num_frames"]) * hop_length)
        spans[v["utterance_id"]] = span
        by_speaker.setdefault(v["speaker"], []).append(span)
    speakers = sorted(by_speaker)
    position = {s: i for i, s in enumerate(speakers)}
    if a.copies and "noise" in a.kinds and not noise_files and len(speakers) < 2:
        raise DataError("features.augment: babble needs training audio of at least two "
                        "speakers (or give features.augment.noise_dir)")
    out = []
    for v in train:
        span, seconds = spans[v["utterance_id"]], v["num_frames"] * hop_length / sample_rate
        versions = [(v["utterance_id"], v["speaker"], 1.0)] + [
            (speed_copy_name(v["utterance_id"], f), speed_copy_name(v["speaker"], f), f)
            for f in a.speed]
        for name, speaker, factor in versions:
            if factor != 1.0:
                out.append(AugmentedCopy(name, speaker, span, seconds / factor,
                                         _seed(a.seed, name), speed=factor))
            for k in range(a.copies):
                kind = a.kinds[k % len(a.kinds)]
                cid = f"{name}+{kind}{k + 1}" if factor != 1.0 else \
                    f"{name}{SEPARATOR}{kind}{k + 1}"
                seed = _seed(a.seed, cid)
                noise_path, babble = None, ()
                if kind == "noise":
                    pick = np.random.default_rng(seed)
                    if noise_files:
                        noise_path = noise_files[pick.integers(len(noise_files))]
                    else:
                        babble = _babble(pick, speakers, by_speaker, position[v["speaker"]])
                out.append(AugmentedCopy(cid, speaker, span, seconds / factor, seed, factor,
                                         kind, noise_path, babble))
    return out


def _babble(pick: np.random.Generator, speakers: list[str], by_speaker: dict,
            own: int) -> tuple[Span, ...]:
    """A training span of each of 3 to 7 speakers other than speakers[own]."""
    n = int(pick.integers(BABBLE_SPEAKERS[0], BABBLE_SPEAKERS[1] + 1))
    chosen = pick.choice(len(speakers) - 1, size=min(n, len(speakers) - 1), replace=False)
    voices = [speakers[i + (i >= own)] for i in sorted(chosen)]  # skipping the own speaker
    return tuple(by_speaker[s][pick.integers(len(by_speaker[s]))] for s in voices)


def render(copy: AugmentedCopy, read, a: Levels, sample_rate: int) -> np.ndarray:
    """The copy's waveform. read(row) decodes a manifest row at `sample_rate`."""
    rng = np.random.default_rng([*copy.seed, 1])
    wave = _cut(read, copy.source)
    if copy.speed != 1.0:
        wave = change_speed(wave, copy.speed, sample_rate)
    if copy.kind == "reverb":
        wave = reverberate(wave, room_impulse_response(rng, sample_rate, a.rt60))
    elif copy.kind == "noise":
        if copy.noise_path is not None:
            noise = looped_crop(rng, _noise(copy.noise_path, sample_rate), len(wave))
            snr = a.snr_db
        else:
            # Babble voices at equal power, so none of them dominates by recording level alone.
            noise = sum(unit_power(looped_crop(rng, _cut(read, s), len(wave)))
                        for s in copy.babble)
            snr = a.babble_snr_db
        wave = add_noise(wave, noise, rng.uniform(*snr))
    return wave


def _cut(read, span: Span) -> np.ndarray:
    return np.asarray(read(span.row), dtype=np.float64)[span.first:span.last]


@lru_cache(maxsize=64)
def _noise(path: str, sample_rate: int) -> np.ndarray:
    return np.asarray(read_audio(path, sample_rate), dtype=np.float64)


def plan_for_split(catalog: list[dict], manifest_rows, p) -> list[AugmentedCopy]:
    """The copies params `p` ask for, given the clean catalog the `index` step will split
    (the same split, from the same params)."""
    f = p.features
    views = split_views(catalog, SplitConfig.from_params(p.index, f.sample_rate / f.hop_length))
    return plan_copies(views, {r.utterance_id: r for r in manifest_rows}, f.augment,
                       hop_length=f.hop_length, sample_rate=f.sample_rate,
                       noise_files=find_noise(f.augment.noise_dir, "features.augment.noise_dir")
                       if f.augment.noise_dir else [])


