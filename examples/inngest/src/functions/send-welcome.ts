// Flow (a): a send inside a durable step. Inngest retries a failed step; the Idempotency-Key,
// derived from the event id, makes every retry of this step the same request, so the worker
// replays the first answer (`Idempotent-Replayed: true`) instead of sending a second email.
import { inngest } from '../client.ts';
import { mailbox, post } from '../multimail.ts';

export const sendWelcomeEmail = inngest.createFunction(
  { id: 'send-welcome-email', triggers: [{ event: 'user/signed-up' }] },
  async ({ event, step }) => {
    const sent = await step.run('send-welcome', () =>
      post('/send_email', {
        from: mailbox(),
        to: event.data.email,
        subject: 'Welcome to Acme',
        text: `Hi ${event.data.name}, your account is ready.`,
        // Transactional and deterministic: this function asks for no oversight. The mailbox must
        // be autonomous for that (a request may ask for its mailbox's mode or a stricter one).
        oversight_mode: 'autonomous',
        metadata: { userId: event.data.userId, eventId: event.id },
      }, { idempotencyKey: `welcome-${event.id}` }),
    );
    return { messageId: sent.id as string, status: sent.status as string };
  },
);
