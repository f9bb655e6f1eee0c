"""asmsketch: Guess & Sketch transpilation of assembly between AArch64 and RISC-V (RV64IM).

A small encoder-decoder guesses a translation; its per-token confidence and cross-attention pick
holes and aligned source blocks; z3 fills the holes (CEGIS) so each sketched block computes what its
source block computes; a translation counts only when executing it gives the source's results.
A separate system from elastiq: it imports nothing of it.
"""

__version__ = "0.1.0"
