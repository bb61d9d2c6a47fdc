// Flow (d): a scheduled digest of what waits: unread mail (check_inbox) and messages held for a
// human (list_pending), sent from the same mailbox. Both lists are read to the end, page by page,
// so the counts are the real ones however long the lists are.
import { NonRetriableError } from 'inngest';
import { inngest } from '../client.ts';
import { all, mailbox, post } from '../multimail.ts';

// Page size of the list calls (the API allows 1–100); the tests set a small one to cross pages.
const pageSize = () => Number(process.env.DIGEST_PAGE_SIZE) || 100;

// Who reads the digest (DIGEST_TO): a person, not the mailbox itself, whose unread count the
// digest would then raise.
function digestTo(): string {
  if (!process.env.DIGEST_TO) throw new NonRetriableError('DIGEST_TO is not set');
  return process.env.DIGEST_TO;
}

// Counts are of the whole lists; the lines stop at 50 of each.
function lines<T>(items: T[], line: (x: T) => string): string[] {
  return [...items.slice(0, 50).map(line), ...(items.length > 50 ? [`  … and ${items.length - 50} more`] : [])];
}

export const dailyDigest = inngest.createFunction(
  { id: 'daily-digest', triggers: [{ cron: '0 8 * * *' }] },
  async ({ step, runId }) => {
    const state = await step.run('fetch-email-state', async () => {
      const box = mailbox();
      const [unread, pending] = await Promise.all([
        all('/check_inbox', 'emails', { mailbox: box, unread: true, limit: pageSize() }),
        all('/list_pending', 'messages', { mailbox: box, limit: pageSize() }),
      ]);
      return {
        mailbox: box,
        date: new Date().toISOString().slice(0, 10),
        unread: unread.map((e) => ({ id: e.id as string, from: e.from as string, subject: e.subject as string })),
        pending: pending.map((m) => ({ id: m.id as string, direction: m.direction as string, to: [m.to].flat().join(', '), from: m.from as string, subject: m.subject as string })),
      };
    });

    const text = [
      `Daily digest for ${state.mailbox}`,
      `Unread messages: ${state.unread.length}`,
      `Pending approvals: ${state.pending.length}`,
      '',
      ...lines(state.unread, (e) => `- [UNREAD] ${e.subject} ← ${e.from}`),
      ...lines(state.pending, (m) => m.direction === 'inbound' ? `- [PENDING] ${m.subject} ← ${m.from}` : `- [PENDING] ${m.subject} → ${m.to}`),
    ].join('\n');

    const digest = await step.run('send-digest', () =>
      post('/send_email', {
        from: state.mailbox,
        to: digestTo(),
        subject: `Agent email digest — ${state.date}`,
        text,
        oversight_mode: 'autonomous',
      }, { idempotencyKey: `digest-${runId}` }));

    return { messageId: digest.id as string, unread: state.unread.length, pending: state.pending.length };
  },
);
