import { Inngest } from 'inngest';

// One client for the app. Sending events is not needed here: MultiMail posts its events to
// Inngest's Event API itself (a `format: "inngest"` webhook; see docs/inngest.md).
export const inngest = new Inngest({ id: 'multimail-example' });
