"""End-to-end Gherkin features (pytest-bdd): <area>.feature + test_<area>.py, shared steps in conftest.py."""
