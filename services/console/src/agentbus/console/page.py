"""The console's HTML page: recent tickets with status and steps, refreshed from the JSON API."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agentbus console</title>
<style>
 body{font:14px system-ui,sans-serif;margin:2rem;color:#222}
 h1{font-size:1.3rem} table{border-collapse:collapse;width:100%}
 th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}
 .status{font-weight:600} .resolved{color:#17803d} .escalated{color:#b45309}
 .awaiting_approval{color:#1d4ed8} .dead_lettered{color:#b91c1c}
 .steps{font-size:12px;color:#555} #detail pre{background:#f6f6f6;padding:1rem;overflow:auto}
</style></head>
<body>
<h1>agentbus — recent tickets</h1>
<p id="meta">loading…</p>
<table id="tickets"><thead><tr><th>ticket</th><th>tenant</th><th>subject</th><th>status</th>
<th>steps</th></tr></thead><tbody></tbody></table>
<div id="detail"></div>
<script>
function esc(s){return String(s??'').replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]))}
async function refresh(){
  const r = await fetch('api/tickets'); const rows = await r.json();
  document.getElementById('meta').textContent = rows.length + ' tickets, updated ' + new Date().toLocaleTimeString();
  document.querySelector('#tickets tbody').innerHTML = rows.map(t =>
    `<tr data-ticket="${esc(t.ticket_id)}"><td><a href="#" onclick="show('${esc(t.ticket_id)}');return false">${esc(t.ticket_id)}</a></td>
     <td>${esc(t.tenant_id)}</td><td>${esc(t.subject)}</td>
     <td class="status ${esc(t.status)}">${esc(t.status)}</td>
     <td class="steps">${t.steps.map(esc).join(' → ')}</td></tr>`).join('');
}
async function show(id){
  const r = await fetch('api/tickets/' + encodeURIComponent(id)); const d = await r.json();
  document.getElementById('detail').innerHTML = '<h2>' + esc(id) + '</h2><pre>' + esc(JSON.stringify(d, null, 2)) + '</pre>';
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
