"""The run configurations: `default.py` declares every field, the others change a few.

A package so that configs can import `default` wherever the command runs from.
"""
