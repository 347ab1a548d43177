"""Osteoguard: a CDS Hooks 2.0 service for bone health under anastrozole."""

__version__ = "0.1.0"
