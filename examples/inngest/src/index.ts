// The functions of this app, for `serve()` (see serve.ts) and for the tests.
export { inngest } from './client.ts';
import { sendWelcomeEmail } from './functions/send-welcome.ts';
import { agentEmailDraft } from './functions/approval.ts';
import { classifyInboundEmail } from './functions/classify-inbound.ts';
import { dailyDigest } from './functions/daily-digest.ts';

export { sendWelcomeEmail, agentEmailDraft, classifyInboundEmail, dailyDigest };
export const functions = [sendWelcomeEmail, agentEmailDraft, classifyInboundEmail, dailyDigest];
