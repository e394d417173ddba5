"""The proof-of-ignorance audit, its statistics and the peer auditors."""

from jaxaudit.audit.decision import TestSettings, ignorance_test
from jaxaudit.audit.runner import AuditResult, AuditSettings, audit, audit_many
from jaxaudit.audit.target import Target
from jaxaudit.audit.verifiers import VerifierSet, get_verifiers

__all__ = ['audit', 'audit_many', 'AuditResult', 'AuditSettings', 'TestSettings', 'Target', 'VerifierSet',
           'get_verifiers', 'ignorance_test']
