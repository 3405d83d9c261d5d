"""The dashboard's stylesheet, inlined into the page (no asset files to package)."""

CSS = """
/* tcr-pipeline dashboard: plain, dense, readable. */
body {
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 0;
  color: #1b1f24;
  background: #f6f7f9;
  font-size: 14px;
}
.topbar {
  display: flex;
  justify-content: space-between;
  align-items: center;
  padding: 10px 24px;
  background: #1f2a37;
  color: #e5e7eb;
}
.topbar .brand { font-weight: 700; font-size: 18px; margin-right: 16px; color: #fff; }
.topbar nav a { color: #cbd5e1; margin-left: 18px; text-decoration: none; }
.topbar nav a:hover { color: #fff; text-decoration: underline; }
.page { padding: 12px 24px 40px; }
h2 { margin: 18px 0 8px; font-size: 20px; }
h3 { margin: 14px 0 6px; font-size: 15px; color: #374151; }
.table { border-collapse: collapse; background: #fff; font-size: 13px; margin-bottom: 8px; }
.table th, .table td {
  border: 1px solid #e5e7eb;
  padding: 4px 8px;
  text-align: left;
  vertical-align: top;
}
.table thead th { background: #f1f5f9; }
.table.kv th { background: #f8fafc; font-weight: 600; white-space: nowrap; }
.table tr.current td { background: #ecfdf5; }
.table tr.unavailable td, .table tr.invalid td, .table tr.alert td { background: #fef2f2; }
.table tr.binding td { background: #eff6ff; }
.badge { padding: 1px 8px; border-radius: 10px; font-size: 12px; color: #fff; background: #6b7280; }
.badge-running { background: #2563eb; }
.badge-completed { background: #059669; }
.badge-failed { background: #dc2626; }
.badge-interrupted { background: #d97706; }
.badge-healthy { background: #059669; }
.badge-alert { background: #dc2626; }
.badge-insufficient_data { background: #6b7280; }
.progress progress { width: 90px; vertical-align: middle; }
.note {
  padding: 8px 12px;
  border-radius: 4px;
  margin: 8px 0;
  border: 1px solid #cbd5e1;
  background: #fff;
}
.note-warning { border-color: #f59e0b; background: #fffbeb; }
.note-error { border-color: #ef4444; background: #fef2f2; }
.row { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.col { flex: 1 1 420px; min-width: 320px; }
.col.wide { flex-basis: 100%; }
.controls { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-end; margin: 8px 0; }
.control { display: flex; flex-direction: column; gap: 4px; min-width: 220px; font-weight: 600; }
.control.wide { min-width: 380px; flex: 1 1 380px; }
.summary, .hint, .position { color: #4b5563; margin: 4px 0; }
.position { align-self: center; }
.button {
  padding: 7px 16px;
  border: 0;
  border-radius: 4px;
  background: #2563eb;
  color: #fff;
  cursor: pointer;
  font-size: 14px;
}
.button.secondary { background: #e5e7eb; color: #111827; }
.csv-input {
  width: 100%;
  height: 220px;
  font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  font-size: 12px;
}
.ag-theme-alpine {
  --ag-font-size: 13px;
  --ag-row-height: 30px;
  --ag-header-height: 34px;
  margin-bottom: 8px;
}
.ag-theme-alpine .row-failed, .ag-theme-alpine .row-invalid { background: #fef2f2; }
.ag-theme-alpine .row-current { background: #ecfdf5; }
.ag-theme-alpine .row-unavailable { background: #fef2f2; }
.ag-theme-alpine .row-binding { background: #eff6ff; }
.ag-theme-alpine .cell-failed { color: #b91c1c; font-weight: 600; }
.ag-theme-alpine .cell-warning { background: #fef3c7; color: #92400e; font-weight: 600; }
.ag-theme-alpine .cell-better { color: #047857; font-weight: 600; }
.ag-theme-alpine .cell-worse { color: #b91c1c; font-weight: 600; }
.table td.better { color: #047857; font-weight: 600; }
.table td.worse { color: #b91c1c; font-weight: 600; }
.verdict { font-weight: 600; margin: 6px 0; }
.verdict.better { color: #047857; }
.verdict.worse { color: #b91c1c; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
"""
