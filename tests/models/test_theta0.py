"""θ0 of the quickstart, held to stored digests: the initializers' bits are part of every result.

jax 0.12 draws ``variance_scaling``'s normal initialization differently in the last bit, and the
quickstart's masks then differ from level 3 on without any error: setup.cfg bounds jax to the
versions the suite has passed on, and this test catches a change of the initializers' bits (a new
jax, flax or model code) where it happens, not in a table that is slightly off.
"""

import hashlib

import jax
import numpy as np

from conftest import compose_config
from lottery import imp

# sha256 of each array's bytes: replicate 0's initial weights (seed 0) of the quickstart (LeNet-300-100,
# glorot_normal, on the 8x8 digits). Computed with jax 0.10.2, flax 0.12.8 (Python 3.11) and checked
# with jax 0.11.2, flax 0.12.12 (Python 3.12), on the CPU.
THETA_0 = {
    "['params']['hidden'][0]['bias'] float32 (300,)": "655a3ef0465a9f30fddf25f4dde0c19a05c6f9069b83961800c1944165955273",  # noqa: E501
    "['params']['hidden'][0]['kernel'] float32 (64, 300)": "c79610dc09429f5768c6ccf1209150213a4b5df1c36b7fd62d86370105924878",  # noqa: E501
    "['params']['hidden'][1]['bias'] float32 (100,)": "7a12e561363385e9dfeeab326368731c030ed4b374e7f5897ac819159d2884c5",  # noqa: E501
    "['params']['hidden'][1]['kernel'] float32 (300, 100)": "6a2c6d1a0ec55b849e12e957bd532b2babe841468f87f667925f6b50d41b2298",  # noqa: E501
    "['params']['output']['bias'] float32 (10,)": "2c34ce1df23b838c5abf2a7f6437cca3d3067ed509ff25f11df6b11b582b51eb",
    "['params']['output']['kernel'] float32 (100, 10)": "a3071e2426442a70517fa16ebaca0f30e6bc882a697b39a0dda7e53c2f704844",  # noqa: E501
}


def digests(weights) -> dict:
    out = {}
    for path, array in jax.tree_util.tree_flatten_with_path(weights)[0]:
        array = np.asarray(array)
        out[f"{jax.tree_util.keystr(path)} {array.dtype} {array.shape}"] = hashlib.sha256(array.tobytes()).hexdigest()
    return out


def test_the_quickstarts_initial_weights_are_the_stored_bits(tmp_path):
    experiment = imp.prepare(compose_config([f"output_dir={tmp_path}"]))  # the quickstart: the defaults
    found = digests(experiment.initial_weights(experiment.keys(0)["init"]))
    changed = sorted(key for key in found.keys() | THETA_0.keys() if found.get(key) != THETA_0.get(key))
    versions = ", ".join(f"{m.__name__} {m.__version__}" for m in (jax, __import__("flax")))
    assert not changed, (
        f"θ0 of the quickstart changed ({versions}): {', '.join(changed)} differ from the stored digests. The "
        "initializers now draw other bits, so results would not be bitwise those of earlier runs (and the README's "
        "tables would not be reproduced): bound the version that changed it in setup.cfg, or, if the change is "
        "intended, update THETA_0 here and say so (docs/reproducibility.md)"
    )
