"""The proof-of-ignorance audit, its statistics and the peer auditors."""

from jaxaudit.audit.decision import TestSettings, ignorance_test, reference_check
from jaxaudit.audit.reference import load_reference_file, with_reference
from jaxaudit.audit.runner import AuditResult, AuditSettings, audit, audit_many
from jaxaudit.audit.target import Target
from jaxaudit.audit.verifiers import VerifierSet, get_verifiers

__all__ = ['audit', 'audit_many', 'AuditResult', 'AuditSettings', 'TestSettings', 'Target', 'VerifierSet',
           'get_verifiers', 'ignorance_test', 'load_reference_file', 'reference_check',
           'with_reference']
