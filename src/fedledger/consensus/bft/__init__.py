"""BFT consensus for the main chain: Tendermint (Buchman, Kwon, Milosevic 2018, Algorithm 1).

``params.py`` reads the genesis parameters, ``messages.py`` holds the signed
proposals, votes and commit certificates, and ``engine.py`` the deterministic
state machine. Engines are imported from their modules, not from here (see
``consensus/__init__.py``).
"""
