"""Unit tests of the score stage's filters on synthetic frames (each can fail), plus one slow
stage run through Ray."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from infra.config_filters import ScoreConfig
from models.vtss import fit_vtss, prior_weights, vtss
from tasks.corpus.lib.defects import pixelate
from tasks.corpus.lib.drawing import codec_blocking
from tasks.curate.filters.black import BlackFilter
from tasks.curate.filters.border import BorderFilter
from tasks.curate.filters.dedup import DedupFilter, clip_similarity, correlations, group_duplicates, unflatten
from tasks.curate.filters.frames import frames_from_arrays, sample_plan
from tasks.curate.filters.logo import corner_persistence
from tasks.curate.filters.mosaic import MosaicFilter, codec_grid
from tasks.curate.filters.motion import MotionFilter
from tasks.curate.filters.ocr import TextLine, in_corner, in_picture_corner, picture_share
from tasks.curate.filters.quality import QualityFilter
from tasks.curate.filters.static import StaticFilter
from tasks.curate.filters.sticker import StickerFilter

cv2.setNumThreads(1)
CFG = ScoreConfig()
FPS = 24.0


def moving_scene(n: int = 48, h: int = 90, w: int = 160, seed: int = 0, speed: int = 2, blur: float = 3) -> np.ndarray:
    """Textured background panning right, so every frame differs from the last."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 255, (h, w * 3, 3), dtype=np.uint8), (0, 0), blur)
    base = cv2.normalize(base, None, 30, 230, cv2.NORM_MINMAX)
    return np.stack([base[:, i * speed: i * speed + w] for i in range(n)])


def test_sample_plan_spreads_and_caps():
    plan = sample_plan(240, 24.0, CFG.decode)
    assert len(plan) == 24 and plan[0] >= 0 and plan[-1] < 240
    assert len(sample_plan(24, 24.0, CFG.decode)) == 4  # 1 s at 4 fps


def test_shared_decode_gives_every_frame_and_samples():
    clip = frames_from_arrays(moving_scene(), FPS, CFG.decode)
    assert clip.num_frames == 48 and clip.thumbs.shape[1:] == (54, 96)
    assert len(clip.samples) == 8 and clip.samples.shape[1:] == (90, 160, 3)


def test_black_finds_a_three_frame_flash_and_not_a_dark_scene():
    frames = moving_scene()
    frames[20:23] = 0
    out = BlackFilter(CFG.black)(frames_from_arrays(frames, FPS, CFG.decode))
    assert out["score_black_s"] == pytest.approx(3 / FPS)
    dark = (moving_scene() * 0.3).astype(np.uint8)  # dim but lit
    assert BlackFilter(CFG.black)(frames_from_arrays(dark, FPS, CFG.decode))["score_black_s"] == 0


def test_static_finds_a_freeze_inside_motion():
    frames = moving_scene()
    frames[20:30] = frames[20]
    out = StaticFilter(CFG.static)(frames_from_arrays(frames, FPS, CFG.decode))
    assert out["score_static_s"] == pytest.approx(10 / FPS)
    clean = StaticFilter(CFG.static)(frames_from_arrays(moving_scene(), FPS, CFG.decode))
    assert clean["score_static_s"] == 0


def test_border_measures_letterbox_and_crop_box():
    frames = moving_scene()
    frames[:, :12] = 0
    frames[:, -12:] = 0
    out = BorderFilter(CFG.border)(frames_from_arrays(frames, FPS, CFG.decode))
    assert out["border_crop"] == [0, 12, 160, 66]
    assert out["score_border"] == pytest.approx(24 / 90)
    assert BorderFilter(CFG.border)(frames_from_arrays(moving_scene(), FPS, CFG.decode))["score_border"] == 0


def test_motion_orders_still_and_fast():
    still = MotionFilter(CFG.motion)(frames_from_arrays(np.repeat(moving_scene(1), 24, 0), FPS, CFG.decode))
    fast = MotionFilter(CFG.motion)(frames_from_arrays(moving_scene(speed=4), FPS, CFG.decode))
    assert still["score_motion"] < 0.01 < fast["score_motion"]


def mosaic_score(frames: np.ndarray) -> float:
    return MosaicFilter(CFG.mosaic)(frames_from_arrays(frames, FPS, CFG.decode))["score_mosaic"]


@pytest.mark.parametrize("cell", [4, 7, 10])
def test_mosaic_finds_a_pixelated_rectangle_over_moving_footage(cell):
    frames = moving_scene(h=96, w=160, blur=2)
    x, y, bw, bh = 50, 30, 64, 48
    for f in frames:
        f[y:y + bh, x:x + bw] = pixelate(f[y:y + bh, x:x + bw], cell)
    score = mosaic_score(frames)
    limit = CFG.mosaic.window ** 2 / (96 * 160)  # one stray window
    # the area found is about the rectangle's (window centres inside it, grown by the window)
    assert 1.5 * limit < score <= 1.3 * (bw + CFG.mosaic.window) * (bh + CFG.mosaic.window) / (96 * 160)


def test_mosaic_ignores_clean_footage_gradients_and_codec_blockiness():
    assert mosaic_score(moving_scene(h=96, w=160, blur=2)) == 0
    ramp = np.tile(np.linspace(20, 230, 400)[None, :, None], (96, 1, 3)).astype(np.uint8)
    assert mosaic_score(np.stack([ramp[:, 3 * i: 3 * i + 160] for i in range(48)])) == 0
    blocky = np.stack([codec_blocking(f, 0.3) for f in moving_scene(h=96, w=160, blur=2)])
    assert mosaic_score(blocky) == 0
    # the same blocks off the codec grid (shifted by 3 px) are a lattice of flat cells: a mosaic
    shifted = np.stack([np.roll(f, (3, 3), axis=(0, 1)) for f in blocky])
    assert mosaic_score(shifted) > 0.2


def stripes(n: int = 48, h: int = 96, w: int = 160, seed: int = 0, speed: int = 2) -> np.ndarray:
    """Vertical stripes (content that changes along x only) panning right."""
    rng = np.random.default_rng(seed)
    profile = np.repeat(rng.integers(40, 220, (w * 3) // 7 + 1), 7)[: w * 3].astype(np.uint8)
    row = cv2.GaussianBlur(profile[None, :, None].repeat(3, axis=2), (0, 0), 1.0)
    return np.stack([np.repeat(row[:, i * speed: i * speed + w], h, axis=0) for i in range(n)])


def test_mosaic_over_one_axis_content_is_found_by_its_bounded_regular_comb():
    frames = stripes()
    x, y, bw, bh = 50, 30, 64, 48
    for f in frames:
        f[y:y + bh, x:x + bw] = pixelate(f[y:y + bh, x:x + bw], 8)
    assert mosaic_score(frames) > 0.03  # the strict profile's bound
    no_comb = MosaicFilter(CFG.mosaic.model_copy(update={"comb_lines": 0}))
    assert no_comb(frames_from_arrays(frames, FPS, CFG.decode))["score_mosaic"] == 0  # two axes alone miss it
    # a still, regular comb over the whole height is the scene's pattern (a fence), not a mosaic
    fence = np.full((48, 96, 160, 3), 90, np.uint8)
    fence[:, :, (np.arange(160) % 10) < 5] = 200
    assert mosaic_score(fence) == 0
    unbounded = MosaicFilter(CFG.mosaic.model_copy(update={"comb_extent": 1.0}))
    assert unbounded(frames_from_arrays(fence, FPS, CFG.decode))["score_mosaic"] == 1.0  # the rule that tells them apart


def test_codec_grid_follows_the_analysis_scale():
    cols, rows = codec_grid((90, 160), 1.0)
    assert cols[0, 7] and cols[0, 15] and not cols[0, 8] and rows[7, 0] and not rows[6, 0]
    assert codec_grid((90, 160), 0.5)[0][0, 3]  # 8 source pixels = 4 analysis pixels
    assert codec_grid((90, 160), 0.25) is None and codec_grid((90, 160), 1 / 3) is None  # 2 px / not whole


def test_sticker_finds_a_still_overlay_on_moving_content():
    frames = moving_scene()
    frames[:, 30:60, 60:90] = (255, 200, 0)
    out = StickerFilter(CFG.sticker)(frames_from_arrays(frames, FPS, CFG.decode))
    assert out["score_sticker"] == pytest.approx(30 * 30 / (90 * 160), rel=0.2)
    assert StickerFilter(CFG.sticker)(frames_from_arrays(moving_scene(), FPS, CFG.decode))["score_sticker"] == 0


def test_sticker_survives_a_flash_and_ignores_still_scenes_lines_and_corners():
    flt = StickerFilter(CFG.sticker)
    frames = moving_scene()
    frames[:, 30:60, 60:90] = (255, 200, 0)
    frames[20:26] = 0  # a black flash over everything, sticker included
    assert flt(frames_from_arrays(frames, FPS, CFG.decode))["score_sticker"] > 0.04
    still = np.repeat(moving_scene(1), 48, 0)  # a still camera: every edge persists, nothing is an overlay
    still[:, 30:60, 60:90] = (255, 200, 0)
    assert flt(frames_from_arrays(still, FPS, CFG.decode))["score_sticker"] == 0
    line = moving_scene()
    line[:, 40:52, 30:130] = (255, 200, 0)  # a thin band: text's business, not a sticker
    assert flt(frames_from_arrays(line, FPS, CFG.decode))["score_sticker"] == 0
    corner = moving_scene()
    corner[:, 4:18, 4:30] = (255, 200, 0)  # wholly inside a corner: the logo filter's
    assert flt(frames_from_arrays(corner, FPS, CFG.decode))["score_sticker"] == 0


def test_sticker_next_to_letterbox_bars_is_found():
    """A sticker pasted near the bottom of a letterboxed picture, partly under the bar: the bar's inner
    edge never moves and must neither join the sticker's blob nor count as still scene in its ring."""
    flt = StickerFilter(CFG.sticker)
    frames = moving_scene()
    frames[:, 62:88, 70:96] = (255, 200, 0)
    frames[:, :12], frames[:, 78:] = 0, 0  # 2.39:1 bars; the sticker's lower part is hidden under one
    out = flt(frames_from_arrays(frames, FPS, CFG.decode))["score_sticker"]
    assert out == pytest.approx(26 * 16 / (90 * 160), rel=0.35)
    clean = moving_scene()
    clean[:, :12], clean[:, 78:] = 0, 0
    assert flt(frames_from_arrays(clean, FPS, CFG.decode))["score_sticker"] == 0


def test_luma_view_matches_the_samples_and_is_exact_on_flat_colour():
    frames = moving_scene(8)
    frames[:, :, 80:] = frames[:, :, 80:] // 2 + 60  # a coloured step the 4:2:0 chroma straddles
    clip = frames_from_arrays(frames, FPS, CFG.decode)
    assert clip.luma.shape == clip.samples.shape[:3] and clip.luma.dtype == np.uint8
    flat = frames_from_arrays(np.full((8, 90, 160, 3), (40, 200, 90), np.uint8), FPS, CFG.decode)
    assert np.ptp(flat.luma) == 0  # one colour: one luma value, exactly


def test_dedup_groups_a_brightened_crop_and_keeps_one():
    a = moving_scene(seed=1, blur=8)  # scene-scale structure, as in film, not pixel noise
    copy = np.clip(a[:, 4:-4, 6:-6].astype(np.float32) * 1.15, 0, 255).astype(np.uint8)
    copy = np.stack([cv2.resize(f, (160, 90)) for f in copy])
    other = moving_scene(seed=2, blur=8)
    flt = DedupFilter(CFG.dedup)
    emb = [flt(frames_from_arrays(x, FPS, CFG.decode))["dedup_embedding"] for x in (a, copy, other)]
    out = group_duplicates(["a", "b", "c"], emb, [48, 48, 48], CFG.dedup)
    assert out[0]["dup_group"] == out[1]["dup_group"] == "a" and out[2]["dup_group"] == "c"
    assert [o["dup_keep"] for o in out] == [True, False, True]


def zoom(frames: np.ndarray, scale: float, gain: float = 1.0) -> np.ndarray:
    """A re-edit: the centre 1/scale of each frame blown back up, brightness times ``gain``."""
    h, w = frames.shape[1:3]
    ch, cw = round(h / scale), round(w / scale)
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.stack([np.clip(cv2.resize(f[y:y + ch, x:x + cw], (w, h)).astype(np.float32) * gain, 0, 255)
                     .astype(np.uint8) for f in frames])


def dedup_embedding(frames: np.ndarray, ocr=None) -> np.ndarray:
    clip = frames_from_arrays(frames, FPS, CFG.decode)
    if ocr is not None:
        clip._cache["ocr"] = ocr  # what the text filter of the same decode leaves for the others
    return unflatten(DedupFilter(CFG.dedup)(clip)["dedup_embedding"], CFG.dedup)


def test_dedup_finds_a_re_edit_cut_elsewhere_and_zoomed():
    take = moving_scene(n=72, seed=3, blur=8, speed=3)
    original, re_edit = take[:48], zoom(take[6:54], 1.08, 0.9)  # cut a quarter of a second later
    other = moving_scene(n=48, seed=4, blur=8, speed=3)
    a, b, c = (dedup_embedding(x) for x in (original, re_edit, other))
    assert clip_similarity(a, b) >= CFG.dedup.similarity_min > clip_similarity(a, c)
    # without the re-crops (scale 1 only) the zoom costs similarity
    assert clip_similarity(a[:1], b[:1]) < clip_similarity(a, b)


def test_dedup_leaves_out_overlays_the_text_filter_found():
    take = moving_scene(n=48, seed=5, blur=8)
    captioned = take.copy()
    captioned[:, 30:60, 10:150] = (235, 235, 235)  # a title plate over a third of the picture
    box = TextLine(box=(10 / 160, 36 / 90, 140 / 160, 18 / 90), text="PART TWO", score=0.99)
    plain, masked, unmasked = dedup_embedding(take), dedup_embedding(captioned, [[box]] * 4), dedup_embedding(captioned)
    assert np.isnan(masked[0, 0]).sum() > 0 and not np.isnan(unmasked).any()
    assert clip_similarity(plain, masked) >= CFG.dedup.similarity_min > clip_similarity(plain, unmasked)


def test_dedup_correlation_is_pearson_over_the_cells_both_have():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 20)), rng.normal(size=(2, 20))
    a[0, :5] = np.nan
    b[1, 15:] = np.nan
    got = correlations(a, b)
    for i in range(3):
        for j in range(2):
            both = ~np.isnan(a[i]) & ~np.isnan(b[j])
            assert got[i, j] == pytest.approx(np.corrcoef(a[i, both], b[j, both])[0, 1], abs=1e-9)


def test_dedup_scales_must_start_with_the_whole_picture():
    from infra.config_filters import DedupConfig

    with pytest.raises(ValueError, match="scales must start at 1.0"):
        DedupConfig(scales=(1.05, 1.1))


def test_quality_penalises_noise_and_blur():
    clean = QualityFilter(CFG.quality)(frames_from_arrays(moving_scene(), FPS, CFG.decode))
    noisy = moving_scene().astype(np.int16) + np.random.default_rng(0).normal(0, 25, (48, 90, 160, 1)).astype(np.int16)
    noisy_out = QualityFilter(CFG.quality)(frames_from_arrays(np.clip(noisy, 0, 255).astype(np.uint8), FPS, CFG.decode))
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in moving_scene()])
    blur_out = QualityFilter(CFG.quality)(frames_from_arrays(blurred, FPS, CFG.decode))
    assert noisy_out["score_noise"] > clean["score_noise"] and noisy_out["score_iqa"] < clean["score_iqa"]
    assert blur_out["score_sharpness"] < clean["score_sharpness"] and blur_out["score_iqa"] < clean["score_iqa"]


def test_logo_needs_the_same_corner_place_in_most_samples():
    mark = TextLine((0.03, 0.04, 0.1, 0.06), "TV5", 0.99)
    moved = TextLine((0.5, 0.5, 0.1, 0.06), "TV5", 0.99)
    assert in_corner(mark.box, 0.25) == "tl" and in_corner(moved.box, 0.25) is None
    assert corner_persistence([[mark]] * 4, 0.25) == 1.0
    assert corner_persistence([[mark], [], [], [moved]], 0.25) == 0.25


def test_corners_are_the_picture_corners_between_bars():
    pillarbox = (40 / 320, 0.0, 240 / 320, 1.0)  # picture share of a 4:3 picture in a 16:9 frame
    take_logo = TextLine((47 / 320, 155 / 180, 37 / 320, 18 / 180), "NEWS", 0.99)  # picture's bottom-left
    channel_logo = TextLine((10 / 320, 155 / 180, 37 / 320, 18 / 180), "NEWS", 0.99)  # on the left bar
    assert in_corner(take_logo.box, 0.25) is None  # measured in the frame it is not in a corner
    assert in_picture_corner(take_logo.box, pillarbox, 0.25) == "bl"
    assert in_picture_corner(channel_logo.box, pillarbox, 0.25) == "bl"
    assert corner_persistence([[take_logo]] * 4, 0.25, pillarbox) == 1.0
    frames = moving_scene(h=90, w=160)
    frames[:, :, :20] = 0
    frames[:, :, -20:] = 0
    clip = frames_from_arrays(frames, FPS, CFG.decode)
    assert picture_share(clip) == pytest.approx((20 / 160, 0.0, 120 / 160, 1.0))


def test_vtss_fit_learns_the_sign_of_a_feature():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"clip_id": [f"c{i}" for i in range(200)], "score_iqa": rng.uniform(0, 1, 200),
                       "score_text": rng.uniform(0, 1, 200)})
    verdicts = {cid: bool(q > 0.5) for cid, q in zip(df.clip_id, df.score_iqa, strict=True)}
    w = fit_vtss(df, verdicts, features=["score_iqa", "score_text"])
    assert w.coef[0] > 1.0 and abs(w.coef[1]) < 0.5 * w.coef[0]
    assert vtss({"score_iqa": 0.9}, w)[0] > 0.5 > vtss({"score_iqa": 0.1}, w)[0]
    assert vtss({"score_iqa": 0.9}, prior_weights())[0] > vtss({"score_iqa": 0.1}, prior_weights())[0]


def _burn_text(frames: np.ndarray, text: str, org: tuple[int, int], scale: float) -> np.ndarray:
    out = frames.copy()
    for f in out:
        cv2.putText(f, text, org, cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return out


@pytest.mark.slow
def test_text_and_logo_with_rapidocr():
    from tasks.curate.filters.logo import LogoFilter
    from tasks.curate.filters.text import TextFilter

    scene = moving_scene(n=48, h=180, w=320)
    text = TextFilter(CFG.text)
    logo = LogoFilter(CFG.logo, CFG.text, text.reader)
    subtitled = frames_from_arrays(_burn_text(scene, "Where did you put the keys?", (40, 160), 0.7), FPS, CFG.decode)
    assert text(subtitled)["score_text"] == 1.0 and text(subtitled)["score_subtitle"] == 1.0
    marked = frames_from_arrays(_burn_text(scene, "NEWS", (250, 25), 0.6), FPS, CFG.decode)
    assert logo(marked)["score_logo"] == 1.0 and text(marked)["score_text"] == 0.0
    plain = frames_from_arrays(scene, FPS, CFG.decode)
    assert text(plain)["score_text"] == 0.0 and logo(plain)["score_logo"] == 0.0


@pytest.mark.slow
def test_score_stage_adds_columns_and_carries_error_rows(make_cfg, tmp_path):
    """The stage through Ray: one good clip scored, one error row carried with null scores."""
    import pyarrow as pa

    from infra import manifest as mf
    from infra.config import ClipsConfig
    from infra.session import open_run
    from infra.stage import run_stage
    from infra.video import write_video
    from tasks.curate import score
    from tasks.curate.clips import CLIPS_SCHEMA

    path = str(tmp_path / "clip.mp4")
    write_video(moving_scene(n=36), path, FPS)
    base = {"source_id": "s", "source_uri": path, "shot_id": "s:0", "start_frame": 0, "end_frame": 36,
            "fps": FPS, "width": 160, "height": 90, "num_frames": 36}
    rows = [{**base, "clip_id": "good", "clip_uri": path, "error": None},
            {**base, "clip_id": "bad", "clip_uri": None, "error": "too short"}]
    ctx = open_run(make_cfg(), "score-test")
    clips = run_stage(ctx, "clips", ClipsConfig(), [], lambda work: pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA))
    cfg = ScoreConfig(resources={"actors": 1}, text={"enabled": False}, logo={"enabled": False},
                      aesthetic={"cache_dir": str(tmp_path / "models")})
    out = mf.read_table(score.run(ctx, cfg, clips)).set_index("clip_id")
    assert len(out) == 2 and set(score.SCORED_SCHEMA.names) <= set(out.reset_index().columns)
    assert out.loc["good", "score_black_s"] == 0 and out.loc["good", "dup_keep"]
    assert 0 < out.loc["good", "score_vtss"] < 1 and pd.isna(out.loc["good", "score_text"])
    assert pd.isna(out.loc["bad", "score_iqa"]) and out.loc["bad", "error"] == "too short"


def test_benchmark_counts_clean_clips_the_strict_profile_rejects():
    """benchmarks/filters.py's clean-rejection rate: clean clips passing D_540p count 0, spoilt ones count."""
    from synthetic_pool import scored_pool

    from benchmarks.filters import clean_rejections
    from infra.config_datasets import DatasetsConfig, dataset_stage_config
    from tasks.curate.datasets import build_view

    pool = scored_pool(400)
    spec = {s.name: s for s in DatasetsConfig().specs}["D_540p"]
    kept = pool[build_view(pool, dataset_stage_config(spec, DatasetsConfig(), "tiny")).in_D_540p.to_numpy()]
    rows = [dict(r, truth_kinds=[]) for r in kept.head(20).to_dict("records")]
    rows += [dict(r, truth_kinds=["black"]) for r in pool.head(30).to_dict("records")]  # defective: not counted
    for r in rows[:3]:
        r["score_black_s"] = 1.0
    out = clean_rejections(rows)
    assert (out["clean_clips"], out["rejected"], out["by_rule"]) == (20, 3, {"black": 3})
    assert out["rate"] == 0.15
