// The server libraries of Segment and PostHog for Node, pointed at a test
// engine (tests/compat_libraries.rs): each sends a page view, a track with
// properties and an identify, then flushes and exits.
//
//   ENGINE_URL=http://127.0.0.1:PORT WRITE_KEY=pk_… RUN=<unique> [RETRIES=n] node servers.mjs
//
// Prints one JSON line per library: {"lib": …, "ids": {…}} naming what it
// sent, so the test can find every event in ClickHouse.
import { Analytics } from '@segment/analytics-node';
import { PostHog } from 'posthog-node';

const { ENGINE_URL, WRITE_KEY, RUN } = process.env;
// Retries each library may make (RETRIES; the outage test raises it).
const RETRIES = Number(process.env.RETRIES || 3);
if (!ENGINE_URL || !WRITE_KEY || !RUN) {
  console.error('usage: ENGINE_URL=… WRITE_KEY=… RUN=… node servers.mjs');
  process.exit(2);
}

const segment = async () => {
  const anonymousId = `${RUN}-node-segment-anon`;
  const userId = `${RUN}-node-segment-user`;
  const analytics = new Analytics({
    writeKey: WRITE_KEY,
    host: ENGINE_URL,
    flushAt: 20,
    flushInterval: 300,
    maxRetries: RETRIES,
  });
  const errors = [];
  analytics.on('error', (e) => errors.push(String(e?.reason ?? e?.code ?? e)));
  analytics.page({
    anonymousId,
    name: 'Pricing',
    properties: { path: '/node/pricing', url: 'https://node.example/node/pricing', title: 'Node Pricing', referrer: 'https://ref.example/' },
  });
  analytics.track({ anonymousId, userId, event: 'Node Signed Up', properties: { plan: 'pro', seats: 3 } });
  analytics.identify({ anonymousId, userId, traits: { email: 'node@example.com' } });
  await analytics.closeAndFlush({ timeout: 60000 });
  return { lib: '@segment/analytics-node', anonymousId, userId, errors };
};

const posthog = async () => {
  const distinctId = `${RUN}-node-posthog-user`;
  const client = new PostHog(WRITE_KEY, { host: ENGINE_URL, flushAt: 20, flushInterval: 300, fetchRetryCount: RETRIES, fetchRetryDelay: 1000 });
  const errors = [];
  client.on('error', (e) => errors.push(String(e?.message ?? e)));
  client.capture({
    distinctId,
    event: '$pageview',
    properties: { $current_url: 'https://node.example/node/docs', title: 'Node Docs', $session_id: `${RUN}-node-posthog-session` },
  });
  client.capture({ distinctId, event: 'node plan upgraded', properties: { plan: 'team', $session_id: `${RUN}-node-posthog-session` } });
  client.identify({ distinctId, properties: { email: 'node-ph@example.com' } });
  await client.shutdown(60000);
  return { lib: 'posthog-node', distinctId, errors };
};

for (const r of await Promise.all([segment(), posthog()])) {
  process.stdout.write(JSON.stringify(r) + '\n');
}
