"""A deterministic multi-speaker corpus of synthetic voices (the `synthetic` data source).

Each speaker is a `Voice`: pitch, vocal-tract length (which scales every formant), speaking
rate, intonation range, glottal pulse shape, breathiness, jitter/shimmer and a personal
"accent" (small per-vowel formant offsets). Utterances are random syllable strings
(consonant-vowel-consonant, with pauses) spoken by that voice, so content varies while the
voice stays recognisable. Every recording also gets its own small variations (pitch and
tempo of the day, vocal effort, microphone colouring, level) and background noise, so that
identifying the speaker is a real task rather than a lookup.

Synthesis is a classic source-filter model, vectorised over samples:
    glottal pulses (phase accumulation of an f0 contour) + aspiration noise
      -> cascade of formant resonators, one static filter per phone, cross-faded
    + band-passed noise for fricatives and stop bursts
    -> speaker brightness, per-recording channel, background noise at `snr_db`.

Randomness is keyed by (seed, role, speaker, utterance) through numpy's SeedSequence, so a
speaker's voice does not depend on how many speakers or utterances are generated, and the
same arguments always give bit-identical files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import butter, lfilter, sosfilt
from tqdm import tqdm

from spkid.core.atomic import write_json
from spkid.core.errors import DataError
from spkid.data.audio import write_wav
from spkid.data.manifest import ManifestRow

__all__ = ["generate_corpus", "speaker_voice", "synthesize_utterance", "Voice",
           "SyntheticArgumentError"]


class SyntheticArgumentError(DataError, ValueError):
    """A corpus argument is out of range (a DataError for the CLI, a ValueError for Python)."""


# Streams of randomness, kept apart so that adding utterances never changes a voice.
_VOICE, _LABELLED, _SUBMIT, _SHUFFLE = 0, 1, 2, 3

# Vowel formants F1-F3 (Hz) of an average adult male (after Peterson & Barney 1952).
VOWELS: dict[str, tuple[float, float, float]] = {
    "i": (270, 2290, 3010), "I": (390, 1990, 2550), "e": (530, 1840, 2480),
    "ae": (660, 1720, 2410), "a": (730, 1090, 2440), "o": (570, 840, 2410),
    "U": (440, 1020, 2240), "u": (300, 870, 2240), "V": (640, 1190, 2390),
    "3": (490, 1350, 1690),
}
_VOWEL_NAMES = tuple(VOWELS)
_VOWEL_TABLE = np.array([VOWELS[v] for v in _VOWEL_NAMES], dtype=np.float64)
_HIGH_FORMANTS = (3500.0, 4300.0)               # F4, F5 of the same average male
_BANDWIDTHS = np.array([70.0, 100.0, 150.0, 220.0, 300.0])
_NEUTRAL = (500.0, 1500.0, 2500.0)              # schwa: the tract at rest

# Consonants: kind, voiced?, F1-F3 while voiced (None: coarticulated with the next vowel),
# noise band (Hz, male reference; scaled by the speaker's tract), noise level, length (s).
CONSONANTS: dict[str, tuple] = {
    "s": ("fricative", False, None, (3800, 7500), 0.30, 0.100),
    "S": ("fricative", False, None, (2200, 5500), 0.30, 0.100),
    "f": ("fricative", False, None, (1200, 7000), 0.08, 0.090),
    "h": ("aspirate", False, None, None, 0.0, 0.070),
    "z": ("fricative", True, (280, 1500, 2500), (3800, 7500), 0.12, 0.080),
    "v": ("fricative", True, (280, 1200, 2300), (1200, 7000), 0.05, 0.070),
    "p": ("stop", False, None, (400, 1600), 0.35, 0.060),
    "t": ("stop", False, None, (2800, 6500), 0.40, 0.060),
    "k": ("stop", False, None, (1400, 3600), 0.40, 0.065),
    "b": ("stop", True, (250, 900, 2200), (400, 1600), 0.15, 0.055),
    "d": ("stop", True, (250, 1500, 2500), (2800, 6500), 0.18, 0.055),
    "g": ("stop", True, (250, 1400, 2300), (1400, 3600), 0.18, 0.060),
    "m": ("nasal", True, (260, 1000, 2200), None, 0.0, 0.070),
    "n": ("nasal", True, (260, 1500, 2500), None, 0.0, 0.065),
    "l": ("approximant", True, (360, 1300, 2700), None, 0.0, 0.060),
    "w": ("approximant", True, (300, 700, 2200), None, 0.0, 0.055),
    "j": ("approximant", True, (260, 2070, 3020), None, 0.0, 0.055),
    "r": ("approximant", True, (310, 1060, 1380), None, 0.0, 0.060),
}
_ONSETS = tuple(CONSONANTS)
_CODAS = ("s", "t", "k", "n", "m", "l", "r", "z", "d", "f")
# How loud each voiced consonant class is next to a vowel (they are partly occluded).
_VOICED_LEVEL = {"fricative": 0.35, "stop": 0.12, "nasal": 0.45, "approximant": 0.7}

_FORMANT_RAMP_S = 0.025     # half-width of formant cross-fades: tongue moves in ~50 ms
_LEVEL_RAMP_S = 0.006       # half-width of amplitude ramps: voicing starts within ~10 ms
_MAX_FORMANT_FRACTION = 0.45  # keep resonators below Nyquist whatever the tract
_PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
_PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)
_PULSE_TABLE = 4096         # points per tabulated glottal period
_CONTROL_HOP = 8            # samples between control points (0.5 ms at 16 kHz)


@dataclass(frozen=True)
class Voice:
    """One speaker's identity: everything that stays the same across their recordings."""
    f0: float                  # median pitch (Hz)
    tract: float               # formant scale; >1 = shorter vocal tract (higher formants)
    rate: float                # syllables per second
    pitch_range: float         # intonation (semitones, standard deviation)
    open_quotient: float       # share of each glottal cycle that the glottis is open
    closing: float             # share of the open phase spent closing (smaller = brighter)
    breathiness: float         # aspiration noise next to the pulses (linear)
    jitter: float              # cycle-to-cycle pitch perturbation (relative)
    shimmer: float             # cycle-to-cycle amplitude perturbation (relative)
    bandwidth: float           # formant bandwidth scale (larger = duller, more damped)
    brightness: float          # first-order tilt of the whole voice (-1 dull .. +1 bright)
    vowels: np.ndarray         # (vowel, F1-F3) in Hz: the speaker's own vowel targets
    high_formants: tuple[float, float]  # F4, F5 (Hz), which depend mostly on anatomy
    fossa: tuple[float, float]  # piriform-fossa dip: frequency (Hz), depth (dB); anatomy too


def speaker_voice(seed: int, index: int, spread: float = 1.0) -> Voice:
    """The voice of speaker `index`. `spread` scales every deviation from the population
    mean, so spread -> 0 makes all speakers the same androgynous voice. Speakers alternate
    male-like (even index) and female-like (odd index), which keeps any prefix balanced."""
    rng = np.random.default_rng([seed, _VOICE, index])
    # Deviations are capped at 2 sigma: no freak voices far outside the human ranges.
    z = np.clip(rng.standard_normal(15), -2.0, 2.0)
    accent = np.clip(rng.standard_normal(_VOWEL_TABLE.shape), -2.0, 2.0)
    sex = 1.0 if index % 2 else -1.0
    s = spread

    tract = 1.07 * math.exp(s * (0.075 * sex + 0.045 * z[1]))
    vowels = _VOWEL_TABLE * tract * np.exp(s * 0.05 * accent)
    return Voice(
        f0=_clip(160.0 * math.exp(s * (0.28 * sex + 0.1 * z[0])), 60.0, 400.0),
        tract=tract,
        rate=_clip(4.5 * math.exp(s * 0.15 * z[2]), 2.0, 9.0),
        pitch_range=_clip(1.6 * math.exp(s * (0.3 * z[3] + 0.1 * sex)), 0.3, 6.0),
        open_quotient=_clip(0.6 + s * (0.05 * sex + 0.07 * z[4]), 0.35, 0.9),
        closing=_clip(0.3 + s * 0.07 * z[5], 0.1, 0.55),
        breathiness=_clip(0.12 * math.exp(s * (0.25 * sex + 0.4 * z[6])), 0.01, 0.8),
        jitter=_clip(0.01 * math.exp(s * 0.4 * z[7]), 0.001, 0.05),
        shimmer=_clip(0.06 * math.exp(s * 0.4 * z[8]), 0.005, 0.3),
        bandwidth=math.exp(s * 0.2 * z[9]),
        brightness=_clip(s * 0.25 * z[10], -0.8, 0.8),
        vowels=vowels,
        high_formants=(_HIGH_FORMANTS[0] * tract * math.exp(s * 0.07 * z[11]),
                       _HIGH_FORMANTS[1] * tract * math.exp(s * 0.07 * z[12])),
        fossa=(4500.0 * tract * math.exp(s * 0.08 * z[13]),
               _clip(12.0 * math.exp(s * 0.3 * z[14]), 3.0, 30.0)),
    )


# ---------------------------------------------------------------------------------------
# Planning: what is said, as a list of phones with acoustic targets.

@dataclass
class _Phone:
    seconds: float
    formants: np.ndarray | None  # F1-F5 (Hz); None = take the next vowel's (coarticulation)
    voicing: float = 0.0         # level of the glottal source
    aspiration: float = 0.0      # level of noise through the vocal tract ('h', stop release)
    frication: float = 0.0       # level of band-passed noise (fricatives, bursts)
    band: tuple[float, float] | None = None
    phrase_start: bool = False   # pitch resets (declination starts over) after a pause
    vowel: bool = False          # the nucleus of a syllable


def _plan(voice: Voice, rng: np.random.Generator, seconds: float, rate: float) -> list[_Phone]:
    """Syllables until the utterance is (about) `seconds` long; the caller stretches the
    timeline to the exact length, which moves the tempo by a few per cent at most."""
    lead, tail = rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.25)
    phones = [_Phone(lead, None, phrase_start=True)]
    tempo = 4.5 / rate   # the phone durations here are for a 4.5 syllables/s talker
    total = lead
    while True:
        syllable = _syllable(voice, rng, tempo)
        phones += syllable
        total += sum(p.seconds for p in syllable)
        if total + tail >= seconds:
            break
        if rng.random() < 0.12:  # a pause between phrases
            pause = rng.uniform(0.12, 0.35)
            phones.append(_Phone(pause, None, phrase_start=True))
            total += pause
    phones.append(_Phone(tail, None))
    _coarticulate(phones)
    return phones


def _syllable(voice: Voice, rng: np.random.Generator, tempo: float) -> list[_Phone]:
    stretch = tempo * math.exp(0.2 * rng.standard_normal())
    stressed = rng.random() < 0.3
    vowel = int(rng.integers(len(_VOWEL_NAMES)))
    # Each token lands a little off the speaker's target, as real vowels do.
    f123 = voice.vowels[vowel] * np.exp(0.04 * rng.standard_normal(3))
    nucleus = _Phone(stretch * rng.uniform(0.09, 0.14) * (1.4 if stressed else 1.0),
                     _formants(voice, f123), voicing=1.2 if stressed else 1.0, vowel=True)
    phones = []
    if rng.random() < 0.8:
        phones += _consonant(voice, rng, _ONSETS[rng.integers(len(_ONSETS))], stretch, True)
    phones.append(nucleus)
    if rng.random() < 0.35:
        phones += _consonant(voice, rng, _CODAS[rng.integers(len(_CODAS))], stretch, False)
    return phones


def _consonant(voice: Voice, rng: np.random.Generator, name: str, stretch: float,
               onset: bool) -> list[_Phone]:
    kind, voiced, f123, band, noise, seconds = CONSONANTS[name]
    seconds *= stretch * rng.uniform(0.8, 1.2)
    formants = _formants(voice, np.array(f123) * voice.tract) if f123 else None
    band = _scaled_band(band, voice.tract) if band else None
    level = _VOICED_LEVEL[kind] if voiced else 0.0
    if kind == "aspirate":
        return [_Phone(seconds, None, aspiration=0.5)]
    if kind in ("nasal", "approximant"):
        return [_Phone(seconds, formants, voicing=level)]
    if kind == "fricative":
        return [_Phone(seconds, formants, voicing=level, frication=noise, band=band)]
    # A stop: closure (silence or a voice bar), release burst, then for a voiceless onset
    # the aspirated voice-onset time before the vowel.
    phones = [_Phone(seconds, formants, voicing=level),
              _Phone(rng.uniform(0.008, 0.015), formants, frication=noise, band=band)]
    if onset and not voiced:
        phones.append(_Phone(stretch * rng.uniform(0.025, 0.05), None, aspiration=0.35))
    return phones


def _formants(voice: Voice, f123: np.ndarray) -> np.ndarray:
    return np.array([*f123, *voice.high_formants], dtype=np.float64)


def _scaled_band(band: tuple[float, float], tract: float) -> tuple[float, float]:
    # Rounded so that each speaker reuses a handful of cached band-pass designs.
    return (round(band[0] * tract, -1), round(band[1] * tract, -1))


def _coarticulate(phones: list[_Phone]) -> None:
    """Silences and voiceless sounds take the tract shape of the next voiced sound (the
    tongue is already on its way); the final silence keeps the last one."""
    upcoming = np.array([*_NEUTRAL, *_HIGH_FORMANTS])
    for phone in reversed(phones):
        if phone.formants is None:
            phone.formants = upcoming
        else:
            upcoming = phone.formants
    last = next((p.formants for p in reversed(phones) if p.voicing > 0), None)
    if last is not None:
        phones[-1].formants = last


# ---------------------------------------------------------------------------------------
# Rendering: from phones to samples.

def synthesize_utterance(voice: Voice, rng: np.random.Generator, num_samples: int,
                         sample_rate: int, snr_db: float) -> np.ndarray:
    """One recording of `voice`, exactly `num_samples` long, float32 in [-1, 1]."""
    # The recording's own variation: pitch and tempo of the day, vocal effort.
    f0 = voice.f0 * math.exp(0.04 * rng.standard_normal())
    rate = voice.rate * math.exp(0.08 * rng.standard_normal())
    closing = _clip(voice.closing * math.exp(0.1 * rng.standard_normal()), 0.08, 0.6)
    breath = voice.breathiness * math.exp(0.2 * rng.standard_normal())

    phones = _plan(voice, rng, num_samples / sample_rate, rate)
    bounds = _boundaries(phones, num_samples)
    level_ramps = _ramps(bounds, _LEVEL_RAMP_S * sample_rate)

    # Slow controls (levels, pitch) are computed every _CONTROL_HOP samples, then refined.
    control = np.arange(0, num_samples + _CONTROL_HOP, _CONTROL_HOP)
    shimmer = 1.0 + voice.shimmer * _smooth_noise(rng, control, sample_rate / f0)
    voicing = _envelope([p.voicing for p in phones], bounds, level_ramps, control)
    voicing *= shimmer * _vowel_arches(phones, bounds, control)
    aspiration = _envelope([p.aspiration for p in phones], bounds, level_ramps, control)
    pitch = _pitch_contour(voice, rng, phones, bounds, control, f0, rate, sample_rate)
    voicing, aspiration, pitch = (_upsample(c, num_samples)
                                  for c in (voicing, aspiration, pitch))

    flow, flow_derivative = _glottal_source(pitch, voice.open_quotient, closing, sample_rate)
    noise = _white(rng, num_samples)
    # Aspiration noise is strongest while the glottis is open, hence the flow modulation.
    source = voicing * (flow_derivative + breath * noise * (0.25 + flow))
    source = source / (np.sqrt(np.mean(source ** 2)) + 1e-12) + aspiration * noise

    voiced = _vocal_tract(source, phones, bounds, voice.bandwidth, sample_rate)
    voiced /= _active_rms(voiced, voicing)
    fricated = _frication(rng, phones, bounds, level_ramps, sample_rate)
    speech = _channel(rng, voiced + fricated, voice, sample_rate)
    return _finish(rng, speech, snr_db, sample_rate)


def _boundaries(phones: list[_Phone], num_samples: int) -> np.ndarray:
    """Sample index where each phone starts, plus the end: the plan stretched to fit."""
    edges = np.concatenate([[0.0], np.cumsum([p.seconds for p in phones])])
    bounds = np.round(edges / edges[-1] * num_samples).astype(np.int64)
    # Every phone keeps at least two samples, so the ramps between them stay well-formed.
    for i in range(1, len(bounds) - 1):
        bounds[i] = max(bounds[i], bounds[i - 1] + 2)
    bounds[-1] = num_samples
    return np.minimum(bounds, num_samples)


def _ramps(bounds: np.ndarray, half_width: float) -> np.ndarray:
    """Half-width of the transition at each inner boundary, short enough that a phone's
    entry and exit ramps never overlap."""
    lengths = np.diff(bounds)
    room = np.minimum(lengths[:-1], lengths[1:]) // 2
    return np.maximum(np.minimum(int(half_width), room), 0)


def _envelope(values: list[float], bounds: np.ndarray, ramps: np.ndarray,
              at: np.ndarray) -> np.ndarray:
    """Piecewise-constant per-phone values with linear ramps across the boundaries,
    evaluated at sample positions `at`."""
    inner = bounds[1:-1]
    xp = np.concatenate([[0], np.ravel(np.column_stack([inner - ramps, inner + ramps])),
                         [bounds[-1]]])
    fp = np.repeat(values, 2)
    return np.interp(at, xp, fp)


def _vowel_arches(phones: list[_Phone], bounds: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Loudness swelling to the middle of each vowel and fading towards its edges, as a
    syllable does, instead of a flat block."""
    phone = np.minimum(np.searchsorted(bounds, at, side="right") - 1, len(phones) - 1)
    start, length = bounds[phone], np.maximum(bounds[phone + 1] - bounds[phone], 1)
    t = (at - start) / length
    is_vowel = np.array([p.vowel for p in phones])[phone]
    return np.where(is_vowel, 1.0 - 0.5 * (2.0 * t - 1.0) ** 2, 1.0)


def _pitch_contour(voice: Voice, rng: np.random.Generator, phones: list[_Phone],
                   bounds: np.ndarray, at: np.ndarray, f0: float, rate: float,
                   sample_rate: int) -> np.ndarray:
    """f0 (Hz) at sample positions `at`."""
    # Intonation: a smooth wander with a new accent every syllable or two
    # (centred, so that the speaker's register, not chance, sets the recording's pitch) ...
    intonation = _smooth_noise(rng, at, 1.5 * sample_rate / rate)
    intonation = voice.pitch_range * (intonation - intonation.mean())
    # ... on top of declination, which starts over at each phrase.
    phrase_starts = np.array([b for b, p in zip(bounds, phones) if p.phrase_start])
    latest_start = phrase_starts[np.searchsorted(phrase_starts, at, side="right") - 1]
    since = (at - latest_start) / sample_rate
    declination = 1.0 - np.minimum(1.2 * since, 3.5)
    jitter = voice.jitter * _smooth_noise(rng, at, sample_rate / f0)
    semitones = intonation + declination
    return np.clip(f0 * 2.0 ** (semitones / 12.0) * (1.0 + jitter), 50.0, 500.0)


def _glottal_source(pitch: np.ndarray, open_quotient: float, closing: float,
                    sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg-style glottal flow and its derivative (the derivative includes the +6 dB/oct
    lip radiation). Phase accumulation lets the pitch glide without clicks."""
    phase = np.cumsum(pitch / sample_rate)
    # One period of the pulse, tabulated finely: a lookup is much cheaper than cosines.
    table = _rosenberg(np.arange(_PULSE_TABLE) / _PULSE_TABLE, open_quotient, closing)
    flow = table[((phase - np.floor(phase)) * _PULSE_TABLE).astype(np.int64) % _PULSE_TABLE]
    derivative = np.diff(flow, prepend=0.0)
    # Unit power, so that breathiness is a ratio whatever the pitch.
    return flow, derivative / (np.sqrt(np.mean(derivative ** 2)) + 1e-12)


def _rosenberg(frac: np.ndarray, open_quotient: float, closing: float) -> np.ndarray:
    """Glottal flow over one period (Rosenberg's pulse B): opens smoothly, snaps shut
    (faster closing = brighter voice), then stays shut for the rest of the cycle. The abrupt
    closure is what gives real voices their energy up to 4-5 kHz."""
    t_open = open_quotient * (1.0 - closing)
    t_close = open_quotient * closing
    rise = 0.5 * (1.0 - np.cos(np.pi * np.minimum(frac / t_open, 1.0)))
    fall = np.cos(0.5 * np.pi * np.clip((frac - t_open) / t_close, 0.0, 1.0))
    return np.where(frac < t_open, rise, fall)


def _vocal_tract(source: np.ndarray, phones: list[_Phone], bounds: np.ndarray,
                 bandwidth: float, sample_rate: int) -> np.ndarray:
    """Filter each stretch of constant tract shape with its own static resonator cascade
    and cross-fade neighbours, which sounds like the formants gliding between targets."""
    regions = _tract_regions(phones, bounds)
    starts = np.array([r[0] for r in regions] + [bounds[-1]])
    fades = _ramps(starts, _FORMANT_RAMP_S * sample_rate)
    fades = np.concatenate([[0], fades, [0]])
    warmup = int(0.01 * sample_rate)  # lets each filter ring up before it is heard
    out = np.zeros_like(source)
    for i, (start, formants) in enumerate(regions):
        lo, hi = start - fades[i], starts[i + 1] + fades[i + 1]
        first = max(lo - warmup, 0)
        b, a = _resonator_cascade(formants, _BANDWIDTHS * bandwidth, sample_rate)
        segment = lfilter(b, a, source[first:hi])[lo - first:]
        segment[:2 * fades[i]] *= _rise(2 * fades[i])
        if fades[i + 1]:
            segment[-2 * fades[i + 1]:] *= 1.0 - _rise(2 * fades[i + 1])
        out[lo:hi] += segment
    return out


def _tract_regions(phones: list[_Phone], bounds: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(start sample, F1-F5) for each run of phones that share a tract shape."""
    regions: list[tuple[int, np.ndarray]] = []
    for phone, start in zip(phones, bounds[:-1]):
        if not regions or regions[-1][1] is not phone.formants:
            regions.append((int(start), phone.formants))
    return regions


def _resonator_cascade(formants: np.ndarray, bandwidths: np.ndarray,
                       sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Klatt's digital resonators in series: unity gain at 0 Hz, so the relative formant
    levels come out of the cascade itself, as in a real tube. Returned multiplied out as
    one (b, a) pair: lfilter costs half of sosfilt per call, and for five resonators this
    far apart the direct form stays accurate to ~1e-9 in float64."""
    freqs = np.minimum(formants, _MAX_FORMANT_FRACTION * sample_rate)
    r = np.exp(-np.pi * bandwidths / sample_rate)
    a1 = -2.0 * r * np.cos(2.0 * np.pi * freqs / sample_rate)
    a2 = r * r
    a = np.ones(1)
    for k in range(len(freqs)):
        a = np.convolve(a, [1.0, a1[k], a2[k]])
    return np.array([np.prod(1.0 + a1 + a2)]), a


def _frication(rng: np.random.Generator, phones: list[_Phone], bounds: np.ndarray,
               ramps: np.ndarray, sample_rate: int) -> np.ndarray:
    """Turbulence noise of fricatives and stop bursts, band-passed per phone."""
    n = int(bounds[-1])
    out = np.zeros(n)
    ramps = np.concatenate([[0], ramps, [0]])
    for i, phone in enumerate(phones):
        if phone.frication <= 0:
            continue
        lo, hi = bounds[i] - ramps[i], bounds[i + 1] + ramps[i + 1]
        noise = lfilter(*_band_pass(*phone.band, sample_rate), rng.standard_normal(hi - lo))
        noise *= phone.frication / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
        noise[:2 * ramps[i]] *= _rise(2 * ramps[i])
        if ramps[i + 1]:
            noise[-2 * ramps[i + 1]:] *= 1.0 - _rise(2 * ramps[i + 1])
        out[lo:hi] += noise
    return out


@lru_cache(maxsize=1024)
def _band_pass(low: float, high: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    nyquist = sample_rate / 2.0
    high = min(high, 0.95 * nyquist)
    low = min(low, 0.7 * high)
    return butter(2, [low, high], btype="bandpass", fs=sample_rate, output="ba")


def _channel(rng: np.random.Generator, wave: np.ndarray, voice: Voice,
             sample_rate: int) -> np.ndarray:
    """The speaker's fixed colouring (brightness, the dip of the piriform fossae, side
    cavities of the throat), then each recording's microphone and room: a random spectral
    tilt and a broad peak or dip somewhere in the speech band. One filter does it all."""
    tilt_db = 10.0 * (voice.brightness + 0.45 * rng.standard_normal())
    centre = math.exp(rng.uniform(math.log(300.0), math.log(0.4 * sample_rate)))
    peak_db = rng.uniform(-6.0, 6.0)
    fossa_hz = min(voice.fossa[0], _MAX_FORMANT_FRACTION * sample_rate)
    sos = np.vstack([_shelf(tilt_db, 1000.0, sample_rate),
                     _peak(-voice.fossa[1], fossa_hz, 4.0, sample_rate),
                     _peak(peak_db, centre, 0.8, sample_rate)])
    return sosfilt(sos, wave)


def _shelf(tilt_db: float, cutoff: float, sample_rate: int) -> np.ndarray:
    """First-order section that cuts below and boosts above `cutoff` by tilt_db/2 each
    (a negative tilt dulls): a one-pole low-pass mixed with its complement."""
    a = math.exp(-2.0 * math.pi * cutoff / sample_rate)
    g = 10.0 ** (tilt_db / 40.0)
    return np.array([g + (1.0 / g - g) * (1.0 - a), -a * g, 0.0, 1.0, -a, 0.0])


def _peak(gain_db: float, centre: float, q: float, sample_rate: int) -> np.ndarray:
    """Peaking equaliser biquad (R. Bristow-Johnson's audio EQ cookbook)."""
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * centre / sample_rate
    alpha = math.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * amp, -2.0 * math.cos(w0), 1.0 - alpha * amp])
    a = np.array([1.0 + alpha / amp, -2.0 * math.cos(w0), 1.0 - alpha / amp])
    return np.concatenate([b / a[0], a / a[0]])


def _finish(rng: np.random.Generator, speech: np.ndarray, snr_db: float,
            sample_rate: int) -> np.ndarray:
    """Add background noise at `snr_db` (relative to the whole recording's speech power)
    and set a random recording level, never clipping."""
    # Rooms hum more than they hiss: pink noise (-3 dB/octave), from P. Kellet's filter.
    noise = lfilter(_PINK_B, _PINK_A, _white(rng, len(speech)))
    speech_power = np.mean(speech ** 2) + 1e-20
    noise *= math.sqrt(speech_power / (np.mean(noise ** 2) + 1e-20) / 10.0 ** (snr_db / 10.0))
    mix = speech + noise
    level = 10.0 ** (rng.uniform(-28.0, -22.0) / 20.0)
    mix *= level / (np.sqrt(np.mean(mix ** 2)) + 1e-20)
    peak = np.max(np.abs(mix))
    if peak > 0.99:
        mix *= 0.99 / peak
    return mix.astype(np.float32)


def _active_rms(wave: np.ndarray, voicing: np.ndarray) -> float:
    active = voicing > 0.5
    part = wave[active] if active.any() else wave
    return float(np.sqrt(np.mean(part ** 2))) + 1e-12


def _smooth_noise(rng: np.random.Generator, at: np.ndarray, spacing: float) -> np.ndarray:
    """Unit-variance random values every `spacing` samples, joined by smoothstep curves,
    evaluated at sample positions `at` (non-negative, increasing)."""
    knots = rng.standard_normal(int(at[-1] / spacing) + 2)
    pos = at / spacing
    i = pos.astype(np.int64)
    t = pos - i
    t = t * t * (3.0 - 2.0 * t)
    return knots[i] * (1.0 - t) + knots[i + 1] * t


def _upsample(control: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation from points every _CONTROL_HOP samples to `n` samples (a plain
    np.interp would binary-search every sample)."""
    step = np.arange(_CONTROL_HOP) / _CONTROL_HOP
    fine = control[:-1, None] + np.diff(control)[:, None] * step
    return fine.ravel()[:n]


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance white noise. Uniform rather than Gaussian: after any filtering the two
    sound the same, and uniform draws are several times cheaper."""
    return (rng.random(n) - 0.5) * math.sqrt(12.0)


def _rise(n: int) -> np.ndarray:
    # Sample-centred, so that a rise and the matching fall sum to exactly one.
    return (np.arange(n) + 0.5) / n


def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


# ---------------------------------------------------------------------------------------
# The corpus.

def generate_corpus(out_dir: Path, *, speakers: int, utterances_per_speaker: int,
                    submit_per_speaker: int, min_seconds: float, max_seconds: float,
                    snr_db: float, spread: float, sample_rate: int, seed: int,
                    unseen_speakers: int = 0, unseen_utterances_per_speaker: int = 0,
                    progress: bool = True) -> list[ManifestRow]:
    """Write `out_dir/audio/<speaker>/<speaker>-uNNN.wav` (labelled) and
    `out_dir/audio/submit/submit-NNNN.wav` (unlabelled, ids shuffled so they reveal nothing),
    plus `out_dir/submit_truth.json` ({submit id: speaker}). Returns one ManifestRow per file
    with paths relative to `out_dir`; submit rows have speaker None and role "submit".

    `unseen_speakers` more voices, `unseen_utterances_per_speaker` utterances each, go to
    `out_dir/verify/unseenNNN/` with role "unseen": speakers to hold out of training and
    verify on. They do not change a single sample of the others."""
    _validate(speakers=speakers, utterances_per_speaker=utterances_per_speaker,
              submit_per_speaker=submit_per_speaker, min_seconds=min_seconds,
              max_seconds=max_seconds, snr_db=snr_db, spread=spread,
              sample_rate=sample_rate, seed=seed)
    out_dir = Path(out_dir)
    names = [f"spk{i:0{max(3, len(str(speakers - 1)))}d}" for i in range(speakers)]
    utt_width = max(3, len(str(utterances_per_speaker - 1)))
    jobs = []  # (utterance id, speaker index, stream, item index, folder, role)
    for s, name in enumerate(names):
        for u in range(utterances_per_speaker):
            jobs.append((f"{name}-u{u:0{utt_width}d}", s, _LABELLED, u, name, None))
    jobs += _submit_jobs(speakers, submit_per_speaker, seed)
    for k in range(unseen_speakers if unseen_utterances_per_speaker else 0):
        name = f"unseen{k:03d}"
        jobs += [(f"{name}-u{u:0{utt_width}d}", speakers + k, _LABELLED, u, name, "unseen")
                 for u in range(unseen_utterances_per_speaker)]

    voices = [speaker_voice(seed, s, spread) for s in range(speakers + unseen_speakers)]
    min_n, max_n = math.ceil(min_seconds * sample_rate), math.floor(max_seconds * sample_rate)
    rows, truth = [], {}
    for utt_id, s, stream, item, folder, role in _progress(jobs, progress):
        rng = np.random.default_rng([seed, stream, s, item])
        n = int(np.clip(round(rng.uniform(min_seconds, max_seconds) * sample_rate), min_n, max_n))
        wave = synthesize_utterance(voices[s], rng, n, sample_rate, snr_db)
        rel = f"{'verify' if role == 'unseen' else 'audio'}/{folder}/{utt_id}.wav"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        write_wav(out_dir / rel, wave, sample_rate)
        speaker = folder if role == "unseen" else None if role else names[s]
        rows.append(ManifestRow(utterance_id=utt_id, speaker=speaker,
                                path=rel, duration=n / sample_rate, role=role))
        if role == "submit":
            truth[utt_id] = names[s]
    write_json(out_dir / "submit_truth.json", dict(sorted(truth.items())))
    return rows


def _submit_jobs(speakers: int, per_speaker: int, seed: int) -> list[tuple]:
    """Unlabelled utterances, numbered in a seeded random order so that neither the id nor
    the position gives the speaker away."""
    items = [(s, j) for s in range(speakers) for j in range(per_speaker)]
    order = np.random.default_rng([seed, _SHUFFLE]).permutation(len(items))
    width = max(4, len(str(len(items) - 1)))
    return [(f"submit-{k:0{width}d}", items[i][0], _SUBMIT, items[i][1], "submit", "submit")
            for k, i in enumerate(order)]


def _progress(jobs: list, enabled: bool):
    if not enabled:
        return jobs
    return tqdm(jobs, desc="synthesising", unit="utt")


def _validate(*, speakers, utterances_per_speaker, submit_per_speaker, min_seconds,
              max_seconds, snr_db, spread, sample_rate, seed) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise SyntheticArgumentError(f"synthetic corpus: {message}")

    for name, value in (("speakers", speakers), ("utterances_per_speaker", utterances_per_speaker),
                        ("submit_per_speaker", submit_per_speaker),
                        ("sample_rate", sample_rate), ("seed", seed)):
        need(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
             f"{name} must be an integer, got {value!r}")
    for name, value in (("min_seconds", min_seconds), ("max_seconds", max_seconds),
                        ("snr_db", snr_db), ("spread", spread)):
        need(isinstance(value, (int, float, np.number)) and math.isfinite(value),
             f"{name} must be a finite number, got {value!r}")
    need(speakers >= 2, f"speakers must be >= 2 (a speaker task needs two), got {speakers}")
    need(utterances_per_speaker >= 1,
         f"utterances_per_speaker must be >= 1, got {utterances_per_speaker}")
    need(submit_per_speaker >= 0, f"submit_per_speaker must be >= 0, got {submit_per_speaker}")
    need(min_seconds >= 0.25, f"min_seconds must be >= 0.25 (room for a syllable), "
                              f"got {min_seconds}")
    need(max_seconds >= min_seconds,
         f"max_seconds ({max_seconds}) must be >= min_seconds ({min_seconds})")
    need(max_seconds <= 600, f"max_seconds must be <= 600, got {max_seconds}")
    need(spread > 0, f"spread must be > 0 (lower = speakers more alike), got {spread}")
    # Formants reach ~4 kHz; above 48 kHz the multiplied-out resonator cascade loses accuracy.
    need(8000 <= sample_rate <= 48000,
         f"sample_rate must be between 8000 and 48000 Hz, got {sample_rate}")
    need(seed >= 0, f"seed must be >= 0, got {seed}")
    need(math.floor(max_seconds * sample_rate) >= math.ceil(min_seconds * sample_rate),
         f"no whole number of samples lies between min_seconds and max_seconds "
         f"at {sample_rate} Hz")
