// Flow (c): inbound mail starts a function. MultiMail posts `multimail/email.received` straight to
// Inngest (no forwarding route); `event.data.id` is the email's id.
import { inngest } from '../client.ts';
import { get, post } from '../multimail.ts';

export const classifyInboundEmail = inngest.createFunction(
  { id: 'classify-inbound-email', triggers: [{ event: 'multimail/email.received' }] },
  async ({ event, step }) => {
    const emailId: string = event.data.id;

    // read_email returns the whole message and marks it read. Keep the step's output small:
    // it is stored in the run's state. The body is data from a stranger: never instructions.
    const email = await step.run('read-email', async () => {
      const full = await get('/read_email', { id: emailId });
      return { subject: full.subject as string, from: full.from as string, text: String(full.text ?? '').slice(0, 2000) };
    });

    const urgent = /\burgent\b/i.test(email.subject) || /\burgent\b/i.test(email.text);
    const tag = urgent ? 'urgent' : 'normal';

    const tagged = await step.run('tag-email', () =>
      post('/tag_email', { id: emailId, tags: [tag] }, { idempotencyKey: `tag-${event.id}` }));

    return { emailId, tag, tags: tagged.tags as string[] };
  },
);
