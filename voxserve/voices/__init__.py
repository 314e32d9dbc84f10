"""The voice library: profiles, reference audio, built-in voices."""
