// The Wire backend for the AVS clients in this page's iframes: one
// conversation whose members get each other's calling messages (econn), as
// the real backend fans them out. Targeted messages (CONFKEY) reach only the
// listed clients.
"use strict";

const members = new Map();  // clientid -> {userid, clientid, frame}
const delivered = [];       // {from, to, type} for diagnostics

const backend = {
  clients() {
    return [...members.values()].map(({ userid, clientid }) => ({ userid, clientid }));
  },
  send(fromClient, convid, data, targets) {
    const from = members.get(fromClient);
    let type = null;
    try { type = JSON.parse(data).type; } catch (err) { type = "unparsable"; }
    const wanted = targets && targets.clients
      ? new Set(targets.clients.map((c) => c.clientid)) : null;
    for (const to of members.values()) {
      if (to.clientid === fromClient) continue;
      if (wanted && !wanted.has(to.clientid)) continue;
      delivered.push({ from: fromClient, to: to.clientid, type });
      // Asynchronously, as over a real network: never re-enter the sender's engine.
      setTimeout(() => to.frame.contentWindow.avsClient.receive(data, from.userid, from.clientid), 0);
    }
  },
};

async function addClient({ userid, clientid, convid, sftUrl }) {
  const frame = document.createElement("iframe");
  frame.src = "client.html";
  document.getElementById("clients").appendChild(frame);
  await new Promise((resolve) => frame.addEventListener("load", resolve, { once: true }));
  members.set(clientid, { userid, clientid, frame });
  await frame.contentWindow.avsClient.init({ userid, clientid, convid, sftUrl, backend });
  // The conversation grew: every member's engine learns the new client list.
  for (const m of members.values()) {
    if (m.clientid !== clientid) m.frame.contentWindow.avsClient.pushClients();
  }
}

function client(clientid) {
  return members.get(clientid).frame.contentWindow.avsClient;
}

window.interop = { addClient, client, delivered, backend };
