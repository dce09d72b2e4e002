// One call through an official Node.js CAMS client, for tests/integration/test_node_sdks.py.
// argv[2]: JSON {"sdk": "cams" | "pop", "method": "GET" | "POST", "endpoint": "127.0.0.1:PORT",
//                "key": "...", "secret": "...", "space": "..."}
// stdout: JSON {"ok": true, "code": "OK"} or {"ok": false, "code": "...", "status": N, "message": "...",
//               "exception": "<class of the error>"}
'use strict';

const args = JSON.parse(process.argv[2]);

async function viaCams() {
  const Cams = require('@alicloud/cams20200606');
  const OpenApi = require('@alicloud/openapi-client');
  const config = new OpenApi.Config({
    accessKeyId: args.key, accessKeySecret: args.secret, endpoint: args.endpoint, protocol: 'HTTP',
  });
  const client = new Cams.default(config);
  const request = new Cams.QueryChatappBindWabaRequest({ custSpaceId: args.space });
  const response = await client.queryChatappBindWaba(request);
  return response.body.code;
}

async function viaPopCore() {
  const Core = require('@alicloud/pop-core');
  const client = new Core({
    accessKeyId: args.key, accessKeySecret: args.secret, endpoint: `http://${args.endpoint}`,
    apiVersion: '2020-06-06',
  });
  const response = await client.request('QueryChatappBindWaba', { CustSpaceId: args.space },
    { method: args.method, timeout: 10000 });
  return response.Code;
}

(async () => {
  try {
    const code = await (args.sdk === 'cams' ? viaCams() : viaPopCore());
    process.stdout.write(JSON.stringify({ ok: true, code }));
  } catch (err) {
    const status = err.statusCode || (err.data && (err.data.statusCode || err.data.httpCode)) || null;
    process.stdout.write(JSON.stringify({
      ok: false, code: err.code || null, status, message: String(err.message || ''),
      exception: err.name || (err.constructor && err.constructor.name) || null,
    }));
  }
})();
