"""From scores to decisions: calibrating a camera's thresholds from images (runtime layer).

:mod:`.calibration` scores a folder of known-good (and optionally known-bad) images, or the frames an operator
marked (:mod:`services.stores.operator_marks`), with a camera's method and decides its thresholds
(:mod:`zsad_core.decisions`); ``zsad calibrate`` records the decision in :mod:`services.stores.camera_settings`,
which keeps one versioned settings record per camera (thresholds, region settings, ROI, paused, followed prompt
version). Serving replicas follow those settings with :mod:`services.frame_path.settings_follower`.
"""
