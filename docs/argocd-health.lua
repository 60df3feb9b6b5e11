-- Argo CD health check for shardeddataset.dev/ShardedDataset (install: docs/gitops.md).
--
-- The operator reports kstatus conditions (operator/sharded_dataset_operator/status.py):
--   working       Ready=False  Reconciling=True   Stalled=False   -> Progressing
--   done          Ready=True   Reconciling=False  Stalled=False   -> Healthy
--   failed/stuck  Ready=False  Reconciling=False  Stalled=True    -> Degraded
-- While a new version is built beside the published one, Ready stays True (reason Serving) with
-- Reconciling=True (-> Progressing, like a Deployment rolling out); if that build fails, Stalled=True
-- (-> Degraded) while the published version keeps serving.
-- and status.observedGeneration: a status older than the spec says nothing about the spec yet.
local hs = {}

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function message(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for status"
  return hs
end

local generation = obj.metadata ~= nil and obj.metadata.generation or nil
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(math.floor(generation))
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled")
  return hs
end

local reconciling = condition(status, "Reconciling")
local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" and reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Building a new version")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "Ready")
  return hs
end
if ready ~= nil and ready.status == "False" then
  hs.status = "Progressing"
  hs.message = message(ready, "Not ready")
  return hs
end

hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
