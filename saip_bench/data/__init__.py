"""Data: the synthetic human world (``synth``) and the native-format readers (``readers``)."""
