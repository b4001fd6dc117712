import subprocess
import sys

import neurovar


def test_public_api_resolves():
    for name in neurovar.__all__:
        assert getattr(neurovar, name) is not None, name
    assert neurovar.noise.inject_noise is not None and neurovar.cortex.compare is not None


def test_importing_neurovar_touches_no_global_rng():
    code = (
        "import numpy as np, torch; s = torch.get_rng_state(); n = np.random.get_state()[1].copy();"
        "import neurovar, neurovar.noise, neurovar.perturb, neurovar.cortex, neurovar.inference;"
        "assert torch.equal(s, torch.get_rng_state()); assert (n == np.random.get_state()[1]).all()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version_matches_metadata():
    from importlib.metadata import version

    assert neurovar.__version__ == version("neurovar")
