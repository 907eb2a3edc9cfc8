"""Evaluation harness: benchmarks as data, WER/CER with the official normalisation, ASR judges, speaker
similarity, long-form drift, RTF and latency, a resumable runner and reports (``mgm-omni eval``)."""
