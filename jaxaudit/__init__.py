"""jaxaudit: did this model truly forget these records?"""

__version__ = '0.1.0'
