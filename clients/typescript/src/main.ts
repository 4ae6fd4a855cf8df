// A Node.js caller of Job Scheduler V2 through openapi-fetch, typed by openapi-typescript
// from openapi/openapi.json (generated into src/schema.d.ts by the test). It stores a
// minimal job (required fields only), runs it, and reads the execution back.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type JobCreate = components["schemas"]["JobCreate"];

const [baseUrl, apiKey] = process.argv.slice(2);
const client = createClient<paths>({
  baseUrl,
  headers: { Authorization: `Bearer ${apiKey}` },
});

// Required fields only: step defaults (timeout, parameters, continue_on_failure) stay out.
const job: JobCreate = {
  job_id: "ts-client",
  job_name: "TypeScript client",
  steps: [{ step_id: "greet", type: "shell", script: "echo hello from node" }],
};

async function main(): Promise<void> {
  const created = await client.POST("/api/v2/jobs", { body: job });
  if (created.error !== undefined) throw new Error(`create: ${JSON.stringify(created.error)}`);

  const ran = await client.POST("/api/v2/jobs/{job_id}/run", {
    params: { path: { job_id: created.data.job_id }, query: { wait: true } },
  });
  if (ran.error !== undefined) throw new Error(`run: ${JSON.stringify(ran.error)}`);
  // 200 (the execution) and 202 (accepted) share `data`: narrow on a field only one has.
  if (!("steps" in ran.data)) throw new Error("expected the finished execution (200)");

  const read = await client.GET("/api/v2/executions/{execution_id}", {
    params: { path: { execution_id: ran.data.execution_id } },
  });
  if (read.error !== undefined) throw new Error(`read: ${JSON.stringify(read.error)}`);
  const output = read.data.steps?.[0]?.output;
  console.log(JSON.stringify({ status: read.data.status, output }));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
