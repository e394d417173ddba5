"""Study reports: a results table (JSON lines) rendered as Markdown + HTML with plots."""

from jaxaudit.report.study import load_results, render_report, study_tables

__all__ = ['load_results', 'render_report', 'study_tables']
