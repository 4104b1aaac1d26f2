-- Orthanc -> MS lesion AI node autorouting (research use only).
--
-- Forwards every *stable* MR series that Orthanc receives to the AI node's DICOM AE, so a site
-- can feed the node from its Orthanc without reconfiguring any modality. The node decides
-- itself (routing.yaml) which series are FLAIR/T1 and runs the job once the study is complete;
-- its results (SEG, SR, overlay series) come back into the same study in Orthanc.
--
-- Load it with the Orthanc option  "LuaScripts": ["/path/to/autoroute.lua"]  and declare the
-- node as a DICOM modality, e.g.  "DicomModalities": {"ainode": ["AINODE", "10.0.0.5", 11112]}.
-- A series is "stable" after "StableAge" seconds (Orthanc option, default 60) without a new
-- instance; 10-30 s is a good value for a site, 2 s is used by the tests.
--
-- Optional settings, in the Orthanc configuration (all keys optional, defaults shown):
--   "AiNodeAutoroute": {
--     "Target": "ainode",              // alias in DicomModalities (or registered by REST)
--     "Modalities": ["MR"],            // series Modality values that are forwarded
--     "SkipDescriptions": ["RESEARCH USE", "AI NODE"],   // substrings (case-insensitive) of
--                                      // SeriesDescription never forwarded (the node's outputs)
--     "SkipManufacturers": ["MS-DICOM-NODE"],            // idem for Manufacturer
--     "SkipFromAets": [],              // calling AEs whose series are never forwarded; the
--                                      // node's own AE (from Target) is always skipped
--     "Synchronous": false,            // false: an Orthanc job per series (see GET /jobs)
--     "Enabled": true
--   }
-- With the orthancteam/orthanc Docker image the same block is set by the environment variable
-- ORTHANC__AI_NODE_AUTOROUTE='{"Target": "ainode"}'.
--
-- Loop safety: the node's outputs are SEG/SR (not MR), and its overlay series carry
-- "RESEARCH USE ONLY" in SeriesDescription and are sent by the node's AE; all three are skipped.

local DEFAULTS = {
  Target = 'ainode',
  Modalities = { 'MR' },
  SkipDescriptions = { 'RESEARCH USE', 'AI NODE' },
  SkipManufacturers = { 'MS-DICOM-NODE' },
  SkipFromAets = {},
  Synchronous = false,
  Enabled = true,
}

local function LoadSettings()
  local s = {}
  for k, v in pairs(DEFAULTS) do s[k] = v end
  local ok, config = pcall(GetOrthancConfiguration)
  if ok and type(config) == 'table' and type(config['AiNodeAutoroute']) == 'table' then
    for k, v in pairs(config['AiNodeAutoroute']) do s[k] = v end
  end
  return s
end

local SETTINGS = LoadSettings()

local function Upper(v)
  if v == nil then return '' end
  return string.upper(tostring(v))
end

local function Contains(list, value)
  for _, item in ipairs(list or {}) do
    if Upper(item) == Upper(value) then return true end
  end
  return false
end

local function ContainsSubstring(list, value)
  local hay = Upper(value)
  for _, item in ipairs(list or {}) do
    if item ~= '' and string.find(hay, Upper(item), 1, true) then return true end
  end
  return false
end

-- AE title of the target modality, from the configuration or the REST-registered modalities.
local function TargetAet(target)
  local ok, body = pcall(RestApiGet, '/modalities/' .. target .. '/configuration')
  if ok and body and body ~= '' then
    local parsed = ParseJson(body)
    if type(parsed) == 'table' and parsed['AET'] then return parsed['AET'] end
  end
  local okc, config = pcall(GetOrthancConfiguration)
  if okc and type(config) == 'table' and type(config['DicomModalities']) == 'table' then
    local m = config['DicomModalities'][target]
    if type(m) == 'table' then return m[1] or m['AET'] end
  end
  return nil
end

-- Calling AE of the series' first instance ("RemoteAET" metadata, set for DICOM receptions).
local function SenderAet(seriesId)
  local ok, body = pcall(RestApiGet, '/series/' .. seriesId)
  if not ok or not body then return nil end
  local series = ParseJson(body)
  local instances = series and series['Instances']
  if type(instances) ~= 'table' or instances[1] == nil then return nil end
  local okm, aet = pcall(RestApiGet, '/instances/' .. instances[1] .. '/metadata/RemoteAET')
  if okm and aet and aet ~= '' then return aet end
  return nil
end

-- Returns nil when the series must be forwarded, else the reason it is skipped.
function AiNodeSkipReason(seriesId, tags)
  if not SETTINGS.Enabled then return 'autoroute disabled' end
  local modality = tags['Modality']
  if not Contains(SETTINGS.Modalities, modality) then
    return 'modality ' .. tostring(modality) .. ' not forwarded'
  end
  if ContainsSubstring(SETTINGS.SkipDescriptions, tags['SeriesDescription']) then
    return 'series description marks a node output'
  end
  if ContainsSubstring(SETTINGS.SkipManufacturers, tags['Manufacturer']) then
    return 'manufacturer marks a node output'
  end
  local sender = SenderAet(seriesId)
  if sender ~= nil then
    local nodeAet = TargetAet(SETTINGS.Target)
    if (nodeAet ~= nil and Upper(sender) == Upper(nodeAet)) or Contains(SETTINGS.SkipFromAets, sender) then
      return 'sent by ' .. sender .. ' (node output)'
    end
  end
  return nil
end

function OnStableSeries(seriesId, tags, metadata)
  local reason = AiNodeSkipReason(seriesId, tags)
  if reason ~= nil then
    print('ai-node autoroute: skip series ' .. seriesId .. ': ' .. reason)
    return
  end
  local request = {
    Resources = { seriesId },
    Synchronous = SETTINGS.Synchronous and true or false,
  }
  local ok, answer = pcall(RestApiPost, '/modalities/' .. SETTINGS.Target .. '/store',
                           DumpJson(request, true))
  if ok then
    local job = ''
    local parsed = answer and ParseJson(answer)
    if type(parsed) == 'table' and parsed['ID'] then job = ' (job ' .. parsed['ID'] .. ')' end
    print('ai-node autoroute: forwarding series ' .. seriesId .. ' (' .. tostring(tags['SeriesInstanceUID']) ..
          ') to ' .. SETTINGS.Target .. job)
  else
    print('ai-node autoroute: FAILED to forward series ' .. seriesId .. ' to ' .. SETTINGS.Target ..
          ': ' .. tostring(answer))
  end
end

print('ai-node autoroute: loaded, target modality "' .. tostring(SETTINGS.Target) .. '"')
