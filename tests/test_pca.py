"""tinyseg.blocks (the block contract: blocks, void rules, one-hot, the class-major order) and
tinyseg.pca: the PCA fit of W (Sec. 3.1), saving, the CLI; and the upper
bounds of tinyseg.metrics that judge the fitted W (dupsampling_oracle vs bilinear_oracle)."""
import subprocess
import sys

import numpy as np
import pytest

import tinyseg.functional as F
from tinyseg import blocks as contract
from tinyseg import metrics, pca
from tinyseg.backend import to_numpy
from tinyseg.metrics import ConfusionMatrix

C, R = 4, 4  # small problems: N = R*R*C = 64


def generated_masks(rng, count, num_classes, height=(13, 23), width=(15, 27), shapes=3,
                    min_side=2):
    """Label maps of random rectangles on background, with VOC-like 1-pixel void borders.

    Sizes are drawn so that most are not multiples of r (padding is exercised).
    """
    masks = []
    for _ in range(count):
        h, w = rng.integers(*height), rng.integers(*width)
        mask = np.zeros((h, w), dtype=np.uint8)
        for _ in range(shapes):
            top, left = rng.integers(0, h - 2), rng.integers(0, w - 2)
            bottom = top + rng.integers(min_side, h // 2 + 3)
            right = left + rng.integers(min_side, w // 2 + 3)
            mask[top:bottom, left:right] = rng.integers(1, num_classes)
        edge = np.zeros_like(mask, dtype=bool)
        edge[1:] |= mask[1:] != mask[:-1]   # a label change from the pixel above
        edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        mask[edge] = 255
        masks.append(mask)
    return masks


def all_fitting_vectors(masks, num_classes, ratio, void):
    """Every block the fit sees, one-hot, all at once: (B, N) float64 in DUpsampling's order."""
    vectors = []
    for mask in masks:
        blocks, _, valid = contract.encode_blocks(mask, ratio, num_classes, void)
        vectors.append(contract.onehot_blocks(blocks[valid], num_classes, dtype=np.float64))
    return np.concatenate(vectors)


@pytest.fixture
def masks(rng):
    return generated_masks(rng, 8, C)


# ---------------------------------------------------------------- blocks and void rules
def test_label_blocks_order_matches_space_to_depth(masks):
    """One-hot block vectors are exactly space_to_depth of the one-hot map (index (i*r+j)*C + c)."""
    mask = masks[0]
    blocks, (gh, gw) = contract.label_blocks(mask, R)
    padded = contract.pad_to_multiple(mask, R)
    onehot_map = (padded[None, None] == np.arange(C)[None, :, None, None]).astype(np.float64)
    expected = F.space_to_depth(onehot_map, R).data[0]              # (N, gh, gw)
    expected = expected.reshape(R * R * C, gh * gw).T               # (gh*gw, N)
    np.testing.assert_array_equal(contract.onehot_blocks(blocks, C, dtype=np.float64), expected)
    np.testing.assert_array_equal(contract.blocks_to_labels(blocks, (gh, gw), R, mask.shape), mask)


def test_fill_void_nearest_is_a_breadth_first_fill():
    mask = np.full((3, 7), 255, dtype=np.uint8)
    mask[1, 0], mask[1, 6] = 1, 2
    filled = contract.fill_void_nearest(mask, steps=2)
    expected = np.array([[1, 1, 255, 255, 255, 2, 2],
                         [1, 1, 1, 255, 2, 2, 2],
                         [1, 1, 255, 255, 255, 2, 2]])
    np.testing.assert_array_equal(filled, expected)
    filled = contract.fill_void_nearest(mask, steps=3)
    assert (filled[1] == [1, 1, 1, 1, 2, 2, 2]).all()  # tie: left


def test_impute_void_takes_the_most_frequent_class_of_the_block():
    blocks = np.array([[3, 3, 1, 255], [255, 255, 255, 255], [2, 255, 1, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(contract.impute_void(blocks, 4),
                                  [[3, 3, 1, 3], [255, 255, 255, 255], [2, 0, 1, 0]])


def test_class_major_order_is_the_one_permutation(xp):
    """v[class_major_order] lists class 0's r*r pixels, then class 1's, ...; block_order undoes it."""
    v = xp.arange(R * R * C)                                   # index (i*r + j)*C + c
    by_class = v.reshape(R * R, C).T.ravel()                   # (c, p) by hand
    order = contract.class_major_order(R, C, xp)
    np.testing.assert_array_equal(to_numpy(v[order]), to_numpy(by_class))
    back = v[order][contract.block_order(R, C, xp)]
    assert bool((back == v).all())


@pytest.mark.parametrize("void", contract.VOID_MODES)
def test_encode_blocks_validity(masks, void):
    blocks, _, valid = contract.encode_blocks(masks[0], R, C, void)
    is_void = blocks == 255
    assert not is_void[valid].all(axis=1).any()            # an all-void block is never fitted
    if void == "skip":
        assert not is_void[valid].any()
    if void == "impute":
        assert not is_void[~is_void.all(axis=1)].any()     # only all-void blocks keep void


# ---------------------------------------------------------------- the fit
@pytest.mark.parametrize("void", contract.VOID_MODES)
def test_streaming_moments_equal_all_blocks_at_once(masks, void):
    moments = pca.BlockMoments(C, R, void, chunk_pixels=100)  # many small chunks
    for mask in masks:
        moments.update(mask)
    count, mean, covariance = moments.statistics()
    order = contract.block_order(R, C)                         # class-major -> block order
    vectors = all_fitting_vectors(masks, C, R, void)
    assert count == len(vectors)
    np.testing.assert_allclose(mean[order], vectors.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(covariance[np.ix_(order, order)],
                               np.cov(vectors, rowvar=False, bias=True), atol=1e-12)


@pytest.mark.parametrize("void", contract.VOID_MODES)
def test_error_is_the_sum_of_the_discarded_eigenvalues(masks, void):
    dim = 10
    W, mean, meta = pca.fit_projection(masks, C, R, dim, void)
    np.testing.assert_allclose(W.T @ W, np.eye(dim), atol=1e-10)          # orthonormal columns
    vectors = all_fitting_vectors(masks, C, R, void)
    eigenvalues = np.linalg.eigvalsh(np.cov(vectors, rowvar=False, bias=True))[::-1]
    np.testing.assert_allclose(meta["explained_variance"], eigenvalues[:dim], atol=1e-10)
    restored = contract.decompress(contract.compress(vectors, W, mean), W, mean)
    error = ((vectors - restored) ** 2).sum(axis=1).mean()
    np.testing.assert_allclose(error, eigenvalues[dim:].sum(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(error, meta["total_variance"] - meta["explained_variance"].sum(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mean, vectors.mean(axis=0), atol=1e-12)


def test_subspace_iteration_matches_eigh(masks):
    vectors = all_fitting_vectors(masks, C, R, "zero")
    covariance = np.cov(vectors, rowvar=False, bias=True)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    top = eigenvectors[:, ::-1][:, :6]
    values, found = pca.subspace_iteration(covariance, 6, oversample=8, tol=1e-10)
    np.testing.assert_allclose(values, eigenvalues[::-1][:6], rtol=1e-8)
    np.testing.assert_allclose(found @ found.T, top @ top.T, atol=1e-6)  # same subspace
    W_auto, _ = pca.principal_components(covariance, 6, solver="subspace")
    W_exact, _ = pca.principal_components(covariance, 6, solver="eigh")
    np.testing.assert_allclose(W_auto, W_exact, atol=1e-5)                 # same signs too
    with pytest.warns(UserWarning, match="stopped after 1 rounds"):
        pca.subspace_iteration(covariance, 6, max_iter=1)


def test_full_dimension_reconstructs_exactly(masks):
    """C~ = N: W is square and orthogonal, so decompress(compress(v)) = v; argmax = the label."""
    W, mean, _ = pca.fit_projection(masks, C, R, R * R * C, "zero")
    for mask in masks[:3]:
        blocks, _, _ = contract.encode_blocks(mask, R, C, "zero")
        onehot = contract.onehot_blocks(blocks, C, dtype=np.float64)
        np.testing.assert_allclose(contract.decompress(contract.compress(onehot, W, mean), W, mean),
                                   onehot, atol=1e-10)
        restored = metrics.dupsampling_oracle(mask, W, mean, R, "nearest")
        labelled = mask != 255
        np.testing.assert_array_equal(restored[labelled], mask[labelled])


def test_oracle_decodes_like_dupsample(masks):
    """The oracle's decoding v~ = W x + mean is DUpsampling's (tinyseg.functional.dupsample)."""
    W, mean, _ = pca.fit_projection(masks, C, R, 12)
    blocks, (gh, gw), _ = contract.encode_blocks(masks[1], R, C)
    x = contract.compress(contract.onehot_blocks(blocks, C), W, mean)        # (gh*gw, C~)
    features = x.T.reshape(1, -1, gh, gw)                                    # (1, C~, gh, gw)
    scores = F.dupsample(features, W, mean, R).data[0]                       # (C, gh*r, gw*r)
    restored = contract.decompress(x, W, mean).reshape(gh, gw, R, R, C)      # (gh, gw, i, j, c)
    restored = restored.transpose(4, 0, 2, 1, 3).reshape(C, gh * R, gw * R)  # (c, gh*i, gw*j)
    np.testing.assert_allclose(scores, restored, atol=1e-12)


def test_bilinear_oracle_matches_torch(masks):
    torch = pytest.importorskip("torch")
    for mask in masks[:3]:
        padded = torch.from_numpy(contract.pad_to_multiple(mask, R).astype(np.int64))
        onehot = (padded[None, None] == torch.arange(C)[None, :, None, None]).double()
        fractions = torch.nn.functional.avg_pool2d(onehot, R)
        scores = torch.nn.functional.interpolate(fractions, scale_factor=R, mode="bilinear",
                                                 align_corners=False)
        expected = scores[0].argmax(dim=0).numpy()[:mask.shape[0], :mask.shape[1]]
        np.testing.assert_array_equal(metrics.bilinear_oracle(mask, R, C, "zero"), expected)


def oracle_mious(train_masks, val_masks, num_classes, ratio, dim):
    W, mean, _ = pca.fit_projection(train_masks, num_classes, ratio, dim)
    W, mean = W.astype(np.float32), mean.astype(np.float32)
    ours, bilinear = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for mask in val_masks:
        ours.update(metrics.dupsampling_oracle(mask, W, mean, ratio), mask)
        bilinear.update(metrics.bilinear_oracle(mask, ratio, num_classes), mask)
    return ours.miou(), bilinear.miou()


def test_oracle_beats_bilinear_on_generated_masks(rng):
    masks = generated_masks(rng, 32, 5, height=(90, 130), width=(100, 150), shapes=4,
                            min_side=16)
    ours, bilinear = oracle_mious(masks[:24], masks[24:], 5, ratio=16, dim=64)
    assert ours > 0.99 and ours > bilinear


def test_oracle_beats_bilinear_on_real_voc_masks(voc_masks_root):
    """Table 1's claim on 100 real VOC train masks (fit) and 50 val masks: r = 16, C~ = 64."""
    from tinyseg.data import build_dataset
    train = build_dataset("voc", voc_masks_root, "train", labels_only=True)
    val = build_dataset("voc", voc_masks_root, "val", labels_only=True)
    ours, bilinear = oracle_mious([train.load_mask(i) for i in range(100)],
                                  [val.load_mask(i) for i in range(50)], 21, ratio=16, dim=64)
    assert ours > 0.99 and ours > bilinear


# ---------------------------------------------------------------- saving and loading
def test_save_load_round_trip(tmp_path, masks):
    W, mean, meta = pca.fit_projection(masks, C, R, 5)
    path = str(tmp_path / "w.npz")
    pca.save_projection(path, W, mean, dict(meta, dataset="generated"))
    W2, mean2, meta2 = pca.load_projection(path)
    np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(mean2, mean)
    np.testing.assert_array_equal(meta2["explained_variance"], meta["explained_variance"])
    assert meta2["dataset"] == "generated" and meta2["void"] == "nearest" and meta2["dim"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]  # no temporary file left


def test_load_rejects_bad_files(tmp_path, masks):
    W, mean, meta = pca.fit_projection(masks, C, R, 5)
    with pytest.raises(ValueError, match="W has shape"):
        pca.save_projection(str(tmp_path / "a.npz"), W[:, :4], mean, meta)
    bad = tmp_path / "b.npz"
    np.savez(bad, W=W, mean=mean[:-1], explained_variance=meta["explained_variance"],
             meta='{"ratio": 4, "num_classes": 4, "dim": 5}')
    with pytest.raises(ValueError, match=r"mean has shape \(63,\), expected \(64,\)"):
        pca.load_projection(str(bad))
    np.savez(tmp_path / "c.npz", W=W)
    with pytest.raises(ValueError, match="not a projection file"):
        pca.load_projection(str(tmp_path / "c.npz"))
    (tmp_path / "d.npz").write_text("not a zip file")
    with pytest.raises(ValueError, match="cannot read projection file"):
        pca.load_projection(str(tmp_path / "d.npz"))
    with pytest.raises(FileNotFoundError, match="projection file not found"):
        pca.load_projection(str(tmp_path / "missing.npz"))


def test_bad_arguments(masks):
    with pytest.raises(ValueError, match="ratio and num_classes must be positive integers"):
        pca.fit_projection(masks, C, 0, 5)
    with pytest.raises(ValueError, match="void must be one of"):
        pca.fit_projection(masks, C, R, 5, void="ignore")
    with pytest.raises(ValueError, match=r"dim \(C~\) must be in 1..64"):
        pca.fit_projection(masks, C, R, 65)
    with pytest.raises(ValueError, match="label 7, outside the class ids 0..3"):
        pca.fit_projection([np.full((8, 8), 7, dtype=np.uint8)], C, R, 5)
    with pytest.raises(ValueError, match="every block was void"):
        pca.fit_projection([np.full((8, 8), 255, dtype=np.uint8)], C, R, 5)


# ---------------------------------------------------------------- command line
def test_cli_writes_a_loadable_file(voc_sample_root, tmp_path, capsys):
    out = str(tmp_path / "w.npz")
    code = pca.main(["--dataset", "voc", "--data-root", voc_sample_root, "--split", "train",
                     "--ratio", "4", "--dim", "8", "--out", out])
    assert code == 0
    W, mean, meta = pca.load_projection(out)
    assert W.shape == (4 * 4 * 21, 8) and mean.shape == (336,)
    assert meta["dataset"] == "voc" and meta["split"] == "train" and meta["void"] == "nearest"
    printed = capsys.readouterr().out
    assert "32/32 images" in printed and "of the variance" in printed


def test_cli_fails_cleanly_on_a_missing_root(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tinyseg.pca", "--data-root", str(tmp_path / "nowhere"),
         "--out", str(tmp_path / "w.npz")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "nowhere" in result.stderr and not (tmp_path / "w.npz").exists()
