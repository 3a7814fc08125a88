"""Synthetic PTB-XL-shaped, G12EC-shaped and CPSC 2018-shaped ECG trees from a physiological (dipole) model.

Each diagnosis is a documented rule on the heart model (:mod:`.diagnoses`), labels are drawn from the
real datasets' priors (:mod:`.labels`), and the trees are written in the real on-disk formats
(:mod:`.writers`), so the study runs end to end on data whose labels are learnable from the waveform.
"""

from ecgml.data.synth import measure
from ecgml.data.synth.config import GENERATOR_VERSION, SynthConfig
from ecgml.data.synth.diagnoses import DIAGNOSES
from ecgml.data.synth.noise import G12EC_NOISE, PTBXL_NOISE, NoiseConfig
from ecgml.data.synth.simulate import SimulatedEcg, simulate
from ecgml.data.synth.writers import SynthSummary, generate, generate_cpsc, generate_g12ec, generate_ptbxl

__all__ = [
    "DIAGNOSES",
    "G12EC_NOISE",
    "GENERATOR_VERSION",
    "PTBXL_NOISE",
    "NoiseConfig",
    "SimulatedEcg",
    "SynthConfig",
    "SynthSummary",
    "generate",
    "generate_cpsc",
    "generate_g12ec",
    "generate_ptbxl",
    "measure",
    "simulate",
]
