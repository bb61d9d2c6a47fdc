// Flow (b): an agent's draft waits for a human. The send is held (`gated_send`), the function
// sleeps in `step.waitForEvent` until MultiMail posts `multimail/email.decided` for this message,
// and a timeout is never taken at its word: the decision may have come before the wait began.
import { inngest } from '../client.ts';
import { get, mailbox, post, request, MultiMailError } from '../multimail.ts';

export const agentEmailDraft = inngest.createFunction(
  { id: 'agent-email-draft', triggers: [{ event: 'agent/draft-ready' }] },
  async ({ event, step }) => {
    const queued = await step.run('queue-for-approval', () =>
      post('/send_email', {
        from: mailbox(),
        to: event.data.recipient,
        subject: event.data.subject,
        text: event.data.body,
        oversight_mode: 'gated_send', // held until a human decides
        metadata: { runId: event.id },
      }, { idempotencyKey: `draft-${event.id}` }),
    );
    const messageId: string = queued.id;

    // `match` would compare a field of the trigger event (agent/draft-ready), which has no
    // message id; `if` compares the incoming event (`async`) with a value known now.
    const decided = await step.waitForEvent('wait-for-approval', {
      event: 'multimail/email.decided',
      timeout: '48h',
      if: `async.data.message_id == '${messageId}'`,
    });
    if (decided) {
      return { messageId, outcome: decided.data.decision as string, decidedBy: decided.data.decided_by as string, seenBy: 'event' };
    }

    // Timed out. A human may have decided before the wait started (the event then went by
    // unseen), so ask MultiMail what happened.
    const truth = await step.run('read-outcome', () => get('/get_email', { id: messageId }));
    if (truth.decision) {
      return { messageId, outcome: truth.decision as string, decidedBy: truth.decided_by as string, seenBy: 'get_email' };
    }

    // Still undecided: stop it, so that it cannot go out later when nobody is watching. A decision
    // that lands first wins; cancel_email then answers 409 with the winner.
    const cancelled = await step.run('cancel-undecided', async () => {
      try {
        return await request('POST', '/cancel_email', { body: { id: messageId, reason: 'no decision within 48 h' }, idempotencyKey: `draft-cancel-${event.id}` });
      } catch (e) {
        if (e instanceof MultiMailError && e.status === 409) return get('/get_email', { id: messageId });
        throw e;
      }
    });
    return { messageId, outcome: cancelled.decision as string, decidedBy: cancelled.decided_by as string, seenBy: 'get_email' };
  },
);
