"""From scores to decisions: per-camera live settings and calibration records, and calibrating from images.

:mod:`.camera_settings` keeps one versioned settings record per camera (thresholds, region settings, ROI,
paused, followed prompt version) and the calibration records that set thresholds, with history, audit entries
and change notices on the prompt registry's stream and channel; serving replicas read them with
:func:`~.camera_settings.load_camera_settings` and follow changes with
:class:`~.camera_settings.CameraSettingsFollower`. :mod:`.calibration` scores a folder of known-good (and
optionally known-bad) images with a camera's method and decides its thresholds (:mod:`zsad_core.decisions`).
:mod:`.operator_marks` records which results an operator marked good or bad.
"""
