"""Spotting quality of a timeline (mgpipe predict --spot) against labelled segments: what the
tests measure the spotting with (tests/test_quickstart.py, tests/test_pose_backends.py)."""

import pandas as pd


def spot_metrics(segments: pd.DataFrame, truth: pd.DataFrame, iou: float = 0.3) -> dict:
    """Spotting quality against labelled segments (start_frame, end_frame, label_id): a spotted
    segment is a hit when it has the label's class and a temporal IoU >= iou with a labelled
    segment not yet matched (best IoU first)."""
    used, tp = set(), 0
    for t in truth.itertuples():
        best = None
        for j, s in enumerate(segments.itertuples()):
            if j in used or s.label_id != t.label_id:
                continue
            inter = min(s.end_frame, t.end_frame) - max(s.start_frame, t.start_frame) + 1
            union = max(s.end_frame, t.end_frame) - min(s.start_frame, t.start_frame) + 1
            score = max(inter, 0) / union
            if score >= iou and (best is None or score > best[1]):
                best = (j, score)
        if best is not None:
            used.add(best[0])
            tp += 1
    return {"true_positives": tp, "spotted": len(segments), "labelled": len(truth),
            "precision": tp / len(segments) if len(segments) else 0.0,
            "recall": tp / len(truth) if len(truth) else 0.0}
