"""complexity"""
