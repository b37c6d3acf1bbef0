"""Testing capacity: a simulator in virtual time and a live load tester (DESIGN.md)."""
